//! OpenAI Chat Completions -> Converse request (the mapping is in the module docs).

use aws_sdk_bedrockruntime::primitives::Blob;
use aws_sdk_bedrockruntime::types as bt;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value, json};
use vmx_domain::inference::ProviderError;
use vmx_providers::content::{
    self, Content, ToolChoiceMode, bad_tool_choice, cache_control, image_url, invalid,
    invalid_message, text_of, tool_call_id, tool_choice_function, tool_choice_mode,
};

use super::build_err;
use crate::control::refuse_control_fields;
use crate::document::to_document;

/// A Converse request, translated from OpenAI.
#[derive(Debug, Clone, Default)]
pub struct ConverseParts {
    pub messages: Vec<bt::Message>,
    pub system: Vec<bt::SystemContentBlock>,
    pub inference: Option<bt::InferenceConfiguration>,
    pub tools: Option<bt::ToolConfiguration>,
    pub additional_fields: Option<Value>,
    pub additional_paths: Vec<String>,
    pub output: Option<bt::OutputConfig>,
}

type Turns = Vec<(bt::ConversationRole, Vec<bt::ContentBlock>)>;

/// The Converse request for an OpenAI Chat Completions `body`.
pub fn to_converse(body: &Map<String, Value>) -> Result<ConverseParts, ProviderError> {
    refuse_control_fields(body)?;
    let messages = content::messages(body)?;
    content::single_choice(body, "Bedrock")?;
    let mut parts = ConverseParts::default();
    let mut turns: Turns = Vec::new();
    let mut has_tool_blocks = false;
    let mut used_tools: Vec<String> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        match content::role(m, i)? {
            "system" | "developer" => system_blocks(m, i, &mut parts.system)?,
            "user" => {
                let mut blocks = user_blocks(m.get("content"), i)?;
                message_cache_point(m, &mut blocks)?;
                push_turn(&mut turns, bt::ConversationRole::User, blocks);
            }
            "assistant" => {
                let mut blocks = assistant_blocks(m, i)?;
                for b in &blocks {
                    if let bt::ContentBlock::ToolUse(t) = b
                        && !used_tools.contains(&t.name)
                    {
                        used_tools.push(t.name.clone());
                    }
                }
                has_tool_blocks |= !used_tools.is_empty();
                message_cache_point(m, &mut blocks)?;
                push_turn(&mut turns, bt::ConversationRole::Assistant, blocks);
            }
            "tool" => {
                has_tool_blocks = true;
                let mut blocks = vec![tool_result(m, i)?];
                message_cache_point(m, &mut blocks)?;
                push_turn(&mut turns, bt::ConversationRole::User, blocks);
            }
            other => return Err(content::unsupported_role(i, other, "Bedrock Converse")),
        }
    }
    if turns.is_empty() {
        return Err(content::no_turns());
    }
    for (role, content) in turns {
        parts.messages.push(
            bt::Message::builder()
                .role(role)
                .set_content(Some(content))
                .build()
                .map_err(build_err("a message"))?,
        );
    }
    parts.inference = inference(body)?;
    parts.tools = tools(body, has_tool_blocks, &used_tools)?;
    parts.output = output_config(body)?;
    additional(body, &mut parts)?;
    Ok(parts)
}

/// Consecutive turns of one role merge, tool results first.
fn push_turn(turns: &mut Turns, role: bt::ConversationRole, blocks: Vec<bt::ContentBlock>) {
    content::push_turn(turns, role, blocks, bt::ContentBlock::is_tool_result);
}

fn cache_point(cc: &Value) -> Result<bt::CachePointBlock, ProviderError> {
    let mut b = bt::CachePointBlock::builder().r#type(bt::CachePointType::Default);
    match cc.get("ttl").and_then(Value::as_str) {
        Some("1h") => b = b.ttl(bt::CacheTtl::OneHour),
        Some("5m") => b = b.ttl(bt::CacheTtl::FiveMinutes),
        _ => {}
    }
    b.build().map_err(build_err("cache_control"))
}

/// A message-level `cache_control` puts a cache point after the message's blocks.
fn message_cache_point(m: &Value, blocks: &mut Vec<bt::ContentBlock>) -> Result<(), ProviderError> {
    if let Some(cc) = cache_control(m)
        && !blocks.is_empty()
        && !matches!(blocks.last(), Some(bt::ContentBlock::CachePoint(_)))
    {
        blocks.push(bt::ContentBlock::CachePoint(cache_point(cc)?));
    }
    Ok(())
}

fn system_blocks(
    m: &Value,
    i: usize,
    out: &mut Vec<bt::SystemContentBlock>,
) -> Result<(), ProviderError> {
    let before = out.len();
    match content::content(m.get("content"), i)? {
        Content::Absent => {}
        Content::Text(s) => {
            if !s.is_empty() {
                out.push(bt::SystemContentBlock::Text(s.to_owned()));
            }
        }
        Content::Parts(parts) => {
            for p in parts {
                let Some(t) = text_of(p) else {
                    return Err(invalid_message(
                        i,
                        "a system message may only hold text parts",
                    ));
                };
                if !t.is_empty() {
                    out.push(bt::SystemContentBlock::Text(t.to_owned()));
                }
                if let Some(cc) = cache_control(p) {
                    out.push(bt::SystemContentBlock::CachePoint(cache_point(cc)?));
                }
            }
        }
    }
    if let Some(cc) = cache_control(m)
        && out.len() > before
        && !matches!(out.last(), Some(bt::SystemContentBlock::CachePoint(_)))
    {
        out.push(bt::SystemContentBlock::CachePoint(cache_point(cc)?));
    }
    Ok(())
}

fn user_blocks(value: Option<&Value>, i: usize) -> Result<Vec<bt::ContentBlock>, ProviderError> {
    let mut out = Vec::new();
    match content::content(value, i)? {
        Content::Absent | Content::Text("") => {}
        Content::Text(s) => out.push(bt::ContentBlock::Text(s.to_owned())),
        Content::Parts(parts) => {
            for (j, p) in parts.iter().enumerate() {
                if let Some(b) = part(p, i, j)? {
                    out.push(b);
                    if let Some(cc) = cache_control(p) {
                        out.push(bt::ContentBlock::CachePoint(cache_point(cc)?));
                    }
                }
            }
        }
    }
    Ok(out)
}

fn part(p: &Value, i: usize, j: usize) -> Result<Option<bt::ContentBlock>, ProviderError> {
    match content::part_type(p) {
        "text" | "refusal" => Ok(text_of(p)
            .filter(|t| !t.is_empty())
            .map(|t| bt::ContentBlock::Text(t.to_owned()))),
        "image_url" => Ok(Some(bt::ContentBlock::Image(image(p, i)?))),
        "file" => {
            let file = p.get("file").unwrap_or(&Value::Null);
            let Some(data) = file.get("file_data").and_then(Value::as_str) else {
                return Err(invalid_message(
                    i,
                    "a file part needs file_data (a base64 data: URL); OpenAI file ids mean nothing to Bedrock",
                ));
            };
            let (mime, bytes) = data_url(data, i)?;
            let format = document_format(&mime).ok_or_else(|| {
                invalid_message(
                    i,
                    &format!(
                        "Bedrock documents are pdf, csv, doc, docx, xls, xlsx, html, txt or md, not {mime}"
                    ),
                )
            })?;
            let name = document_name(file.get("filename").and_then(Value::as_str), i, j);
            let doc = bt::DocumentBlock::builder()
                .format(format)
                .name(name)
                .source(bt::DocumentSource::Bytes(Blob::new(bytes)))
                .build()
                .map_err(build_err("a file part"))?;
            Ok(Some(bt::ContentBlock::Document(doc)))
        }
        "input_audio" => Err(invalid_message(
            i,
            "Bedrock Converse does not take input_audio",
        )),
        other => Err(invalid_message(
            i,
            &format!("content part type '{other}' is not supported by Bedrock Converse"),
        )),
    }
}

fn image(p: &Value, i: usize) -> Result<bt::ImageBlock, ProviderError> {
    let url = image_url(p, i)?;
    if !url.starts_with("data:") {
        return Err(invalid_message(
            i,
            "Bedrock takes images as bytes: send the image as a base64 data: URL (data:image/png;base64,...) or an https URL",
        ));
    }
    let (mime, bytes) = data_url(url, i)?;
    let format = match mime.as_str() {
        "image/png" => bt::ImageFormat::Png,
        "image/jpeg" | "image/jpg" => bt::ImageFormat::Jpeg,
        "image/gif" => bt::ImageFormat::Gif,
        "image/webp" => bt::ImageFormat::Webp,
        other => {
            return Err(invalid_message(
                i,
                &format!("Bedrock images are png, jpeg, gif or webp, not {other}"),
            ));
        }
    };
    bt::ImageBlock::builder()
        .format(format)
        .source(bt::ImageSource::Bytes(Blob::new(bytes)))
        .build()
        .map_err(build_err("an image part"))
}

/// `data:<mime>;base64,<data>` -> (mime, bytes).
fn data_url(url: &str, i: usize) -> Result<(String, Vec<u8>), ProviderError> {
    let bad = || invalid_message(i, "expected a base64 data: URL (data:<type>;base64,<data>)");
    let rest = url.strip_prefix("data:").ok_or_else(bad)?;
    let (meta, data) = rest.split_once(',').ok_or_else(bad)?;
    let mime = meta.strip_suffix(";base64").ok_or_else(bad)?;
    let bytes = B64.decode(data.trim()).map_err(|_| bad())?;
    Ok((mime.to_ascii_lowercase(), bytes))
}

fn document_format(mime: &str) -> Option<bt::DocumentFormat> {
    Some(match mime {
        "application/pdf" => bt::DocumentFormat::Pdf,
        "text/csv" => bt::DocumentFormat::Csv,
        "application/msword" => bt::DocumentFormat::Doc,
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => {
            bt::DocumentFormat::Docx
        }
        "application/vnd.ms-excel" => bt::DocumentFormat::Xls,
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" => {
            bt::DocumentFormat::Xlsx
        }
        "text/html" => bt::DocumentFormat::Html,
        "text/plain" => bt::DocumentFormat::Txt,
        "text/markdown" => bt::DocumentFormat::Md,
        _ => return None,
    })
}

/// Bedrock document names allow letters, digits, single spaces, hyphens, parentheses and
/// square brackets.
fn document_name(filename: Option<&str>, i: usize, j: usize) -> String {
    let stem = filename
        .map(|f| f.rsplit_once('.').map_or(f, |(s, _)| s))
        .unwrap_or_default();
    let mut name = String::new();
    for c in stem.chars().take(200) {
        let c = if c.is_ascii_alphanumeric() || "-()[]".contains(c) {
            c
        } else {
            ' '
        };
        if !(c == ' ' && (name.is_empty() || name.ends_with(' '))) {
            name.push(c);
        }
    }
    let name = name.trim_end().to_owned();
    if name.is_empty() {
        format!("document-{i}-{j}")
    } else {
        name
    }
}

fn assistant_blocks(m: &Value, i: usize) -> Result<Vec<bt::ContentBlock>, ProviderError> {
    let text = |t: &str| bt::ContentBlock::Text(t.to_owned());
    let mut out = content::blocks(m.get("content"), i, text, |p| {
        Ok(text_of(p).filter(|t| !t.is_empty()).map(text))
    })?;
    for call in content::tool_calls(m, i, true)? {
        let k = call.index;
        let input = match call.arguments {
            None | Some(Value::Null) => json!({}),
            Some(Value::String(s)) if s.trim().is_empty() => json!({}),
            Some(Value::String(s)) => serde_json::from_str::<Value>(s).map_err(|_| {
                invalid(
                    format!("messages[{i}].tool_calls[{k}].function.arguments is not valid JSON"),
                    Some("messages"),
                )
            })?,
            Some(v) => v.clone(),
        };
        out.push(bt::ContentBlock::ToolUse(
            bt::ToolUseBlock::builder()
                .set_tool_use_id(call.id.map(str::to_owned))
                .name(call.name)
                .input(to_document(&input))
                .build()
                .map_err(build_err("a tool call"))?,
        ));
    }
    Ok(out)
}

fn tool_result(m: &Value, i: usize) -> Result<bt::ContentBlock, ProviderError> {
    let id = tool_call_id(m, i)?;
    let mut content = Vec::new();
    match content::content(m.get("content"), i)? {
        Content::Absent => {}
        Content::Text(s) => content.push(bt::ToolResultContentBlock::Text(s.to_owned())),
        Content::Parts(parts) => {
            for p in parts {
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        if let Some(t) = text_of(p) {
                            content.push(bt::ToolResultContentBlock::Text(t.to_owned()));
                        }
                    }
                    Some("image_url") => {
                        content.push(bt::ToolResultContentBlock::Image(image(p, i)?));
                    }
                    _ => {
                        return Err(invalid_message(
                            i,
                            "a tool message may hold text and image parts only",
                        ));
                    }
                }
            }
        }
    }
    if content.is_empty() {
        content.push(bt::ToolResultContentBlock::Text(String::new()));
    }
    Ok(bt::ContentBlock::ToolResult(
        bt::ToolResultBlock::builder()
            .tool_use_id(id)
            .set_content(Some(content))
            .build()
            .map_err(build_err("a tool result"))?,
    ))
}

fn inference(
    body: &Map<String, Value>,
) -> Result<Option<bt::InferenceConfiguration>, ProviderError> {
    let mut b = bt::InferenceConfiguration::builder();
    let mut any = false;
    if let Some(n) = content::max_tokens(body)? {
        let name = if body
            .get("max_completion_tokens")
            .is_some_and(|v| !v.is_null())
        {
            "max_completion_tokens"
        } else {
            "max_tokens"
        };
        let n = i32::try_from(n).map_err(|_| {
            invalid(
                format!("`{name}` must be a non-negative integer"),
                Some(name),
            )
        })?;
        b = b.max_tokens(n);
        any = true;
    }
    for (name, set) in [("temperature", true), ("top_p", false)] {
        match body.get(name) {
            None | Some(Value::Null) => {}
            Some(v) => {
                let f = v
                    .as_f64()
                    .ok_or_else(|| invalid(format!("`{name}` must be a number"), Some(name)))?;
                #[allow(clippy::cast_possible_truncation)]
                let f = f as f32;
                b = if set { b.temperature(f) } else { b.top_p(f) };
                any = true;
            }
        }
    }
    match body.get("stop") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            b = b.stop_sequences(s.clone());
            any = true;
        }
        Some(Value::Array(items)) => {
            for s in items {
                let s = s
                    .as_str()
                    .ok_or_else(|| invalid("`stop` must hold strings", Some("stop")))?;
                b = b.stop_sequences(s);
                any = true;
            }
        }
        Some(_) => return Err(invalid("`stop` must be a string or an array", Some("stop"))),
    }
    Ok(any.then(|| b.build()))
}

/// Converse refuses tool blocks in the history without a `toolConfig`: when the caller sent
/// no tools but the conversation used some, each used tool is declared with an open schema.
fn history_tools(used: &[String]) -> Result<Option<bt::ToolConfiguration>, ProviderError> {
    if used.is_empty() {
        return Ok(None);
    }
    let mut tools = Vec::with_capacity(used.len());
    for name in used {
        let spec = bt::ToolSpecification::builder()
            .name(name)
            .description("A tool used earlier in this conversation.")
            .input_schema(bt::ToolInputSchema::Json(to_document(
                &json!({ "type": "object", "properties": {} }),
            )))
            .build()
            .map_err(build_err("a tool"))?;
        tools.push(bt::Tool::ToolSpec(spec));
    }
    bt::ToolConfiguration::builder()
        .set_tools(Some(tools))
        .build()
        .map(Some)
        .map_err(build_err("tools"))
}

fn tools(
    body: &Map<String, Value>,
    has_tool_blocks: bool,
    used_tools: &[String],
) -> Result<Option<bt::ToolConfiguration>, ProviderError> {
    let Some(list) = content::tools(body) else {
        return history_tools(used_tools);
    };
    let mut converted = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        let Some((f, name)) = content::function_tool(t, i)? else {
            return Err(invalid(
                format!("tools[{i}]: Bedrock Converse takes function tools only"),
                Some("tools"),
            ));
        };
        let schema = content::parameters_schema(f);
        let mut spec = bt::ToolSpecification::builder()
            .name(name)
            .input_schema(bt::ToolInputSchema::Json(to_document(&schema)));
        if let Some(Value::String(d)) = f.get("description") {
            spec = spec.description(d);
        }
        if let Some(Value::Bool(s)) = f.get("strict") {
            spec = spec.strict(*s);
        }
        converted.push(bt::Tool::ToolSpec(
            spec.build().map_err(build_err("a tool"))?,
        ));
        if let Some(cc) = cache_control(t).or_else(|| cache_control(f)) {
            converted.push(bt::Tool::CachePoint(cache_point(cc)?));
        }
    }
    let choice = match body.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match tool_choice_mode(s)? {
            ToolChoiceMode::None if !has_tool_blocks => return Ok(None),
            ToolChoiceMode::None => None,
            ToolChoiceMode::Auto => {
                Some(bt::ToolChoice::Auto(bt::AutoToolChoice::builder().build()))
            }
            ToolChoiceMode::Required => {
                Some(bt::ToolChoice::Any(bt::AnyToolChoice::builder().build()))
            }
        },
        Some(Value::Object(o)) if o.get("type").and_then(Value::as_str) == Some("function") => {
            let name = tool_choice_function(o)?;
            Some(bt::ToolChoice::Tool(
                bt::SpecificToolChoice::builder()
                    .name(name)
                    .build()
                    .map_err(build_err("tool_choice"))?,
            ))
        }
        Some(_) => return Err(bad_tool_choice()),
    };
    bt::ToolConfiguration::builder()
        .set_tools(Some(converted))
        .set_tool_choice(choice)
        .build()
        .map(Some)
        .map_err(build_err("tools"))
}

fn output_config(body: &Map<String, Value>) -> Result<Option<bt::OutputConfig>, ProviderError> {
    let Some(rf) = body.get("response_format").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    if rf.get("type").and_then(Value::as_str) != Some("json_schema") {
        return Ok(None);
    }
    let js = rf.get("json_schema").unwrap_or(&Value::Null);
    let schema = js.get("schema").filter(|s| s.is_object()).ok_or_else(|| {
        invalid(
            "response_format.json_schema.schema must be an object",
            Some("response_format"),
        )
    })?;
    let mut def = bt::JsonSchemaDefinition::builder().schema(schema.to_string());
    if let Some(Value::String(n)) = js.get("name") {
        def = def.name(n);
    }
    if let Some(Value::String(d)) = js.get("description") {
        def = def.description(d);
    }
    let format = bt::OutputFormat::builder()
        .r#type(bt::OutputFormatType::JsonSchema)
        .structure(bt::OutputFormatStructure::JsonSchema(
            def.build().map_err(build_err("response_format"))?,
        ))
        .build()
        .map_err(build_err("response_format"))?;
    Ok(Some(
        bt::OutputConfig::builder().text_format(format).build(),
    ))
}

fn additional(body: &Map<String, Value>, parts: &mut ConverseParts) -> Result<(), ProviderError> {
    let mut fields = match body.get("additionalModelRequestFields") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(o)) => o.clone(),
        Some(_) => {
            return Err(invalid(
                "additionalModelRequestFields must be an object",
                Some("additionalModelRequestFields"),
            ));
        }
    };
    for name in ["thinking", "top_k"] {
        if let Some(v) = body.get(name).filter(|v| !v.is_null()) {
            fields.entry(name).or_insert_with(|| v.clone());
        }
    }
    if !fields.is_empty() {
        parts.additional_fields = Some(Value::Object(fields));
    }
    match body.get("additionalModelResponseFieldPaths") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => {
            for p in a {
                let p = p.as_str().ok_or_else(|| {
                    invalid(
                        "additionalModelResponseFieldPaths must hold strings",
                        Some("additionalModelResponseFieldPaths"),
                    )
                })?;
                parts.additional_paths.push(p.to_owned());
            }
        }
        Some(_) => {
            return Err(invalid(
                "additionalModelResponseFieldPaths must be an array of strings",
                Some("additionalModelResponseFieldPaths"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(o) => o,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn translates_roles_tools_and_inference() {
        let parts = to_converse(&body(json!({
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [
                    {"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
                ]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "42"},
                {"role": "user", "content": "thanks"}
            ],
            "max_tokens": 100, "temperature": 0.5, "top_p": 0.9, "stop": ["X"],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "tool_choice": "required",
            "thinking": {"type": "enabled", "budget_tokens": 1024}
        })))
        .expect("translates");
        assert_eq!(parts.system.len(), 1);
        assert_eq!(parts.messages.len(), 3, "tool result and user merged");
        let user = &parts.messages[0].content;
        assert!(user[0].is_text());
        assert!(user[1].is_cache_point());
        assert!(user[2].is_image());
        assert!(parts.messages[1].content[0].is_tool_use());
        let last = &parts.messages[2].content;
        assert!(last[0].is_tool_result());
        assert!(last[1].is_text());
        let inf = parts.inference.expect("inference");
        assert_eq!(inf.max_tokens, Some(100));
        assert_eq!(inf.stop_sequences, Some(vec!["X".to_owned()]));
        let tools = parts.tools.expect("tools");
        assert!(matches!(tools.tool_choice, Some(bt::ToolChoice::Any(_))));
        assert_eq!(
            parts.additional_fields,
            Some(json!({"thinking": {"type": "enabled", "budget_tokens": 1024}}))
        );
    }

    #[test]
    fn refuses_remote_images_and_many_choices() {
        let e = to_converse(&body(json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
        ]}]})))
        .expect_err("refused");
        assert!(matches!(e, ProviderError::BadRequest { status: 400, .. }));
        let e = to_converse(&body(
            json!({"n": 2, "messages": [{"role": "user", "content": "x"}]}),
        ))
        .expect_err("refused");
        assert!(matches!(e, ProviderError::BadRequest { .. }));
    }

    #[test]
    fn tool_choice_none_without_tool_history_drops_tools() {
        let parts = to_converse(&body(json!({
            "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "tool_choice": "none"
        })))
        .expect("translates");
        assert!(parts.tools.is_none());
    }

    #[test]
    fn tool_history_without_tools_declares_the_used_tools() {
        let parts = to_converse(&body(json!({"messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ]},
            {"role": "tool", "tool_call_id": "c1", "content": "1"}
        ]})))
        .expect("translates");
        let tools = parts.tools.expect("declared");
        assert_eq!(tools.tools.len(), 1);
        assert!(tools.tool_choice.is_none());
    }

    #[test]
    fn document_names_are_sanitized() {
        assert_eq!(
            document_name(Some("my_report v2.pdf"), 0, 0),
            "my report v2"
        );
        assert_eq!(document_name(Some("..."), 1, 2), "document-1-2");
    }
}
