//! Inference routes (OpenAI-compatible).

use axum::Extension;
use axum::extract::{Request, State};
use axum::response::Response;

use crate::AppState;
use crate::auth::Caller;
use crate::client_ip::client_ip;
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::routes::chat;

/// `POST /v1/chat/completions`.
pub async fn chat_completions(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    request: Request,
) -> Result<Response, ApiError> {
    let ip = client_ip(
        request.extensions(),
        request.headers(),
        &state.trusted_proxies,
    );
    let JsonBody(body) =
        <JsonBody as axum::extract::FromRequest<AppState>>::from_request(request, &state).await?;
    chat::handle(&state.gateway, body, ip, |resolved| {
        if caller.may_use(&resolved.connection.id, &resolved.connection.name) {
            Ok(())
        } else {
            Err(ApiError::Forbidden {
                code: "connection_not_allowed",
                message: format!(
                    "this API key may not use connection '{}'",
                    resolved.connection.name
                ),
            })
        }
    })
    .await
}
