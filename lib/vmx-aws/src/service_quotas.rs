//! Bedrock limits from Service Quotas, for the scheduled limit refresh
//! ([`vmx_domain::discovered::QuotaSource`]).
//!
//! For a Bedrock connection, the refresh assumes the connection's role (the same
//! [`AssumedRoles`] cache as inference, so `externalId` and trust policy apply alike) and
//! reads `ListServiceQuotas` for service code `bedrock` in the connection's region, every
//! page, once per (role, region) per [`ServiceQuotasOptions::list_ttl`]: a run over many
//! connections of one account makes one listing.
//!
//! Matching a model id to its quotas. Quota names are
//! `<scope> <InvokeModel | model inference> <requests | tokens> per <minute | day> for <model
//! name>`, the model named as the console shows it (`Anthropic Claude 3.5 Sonnet V2`), not by
//! its id (`anthropic.claude-3-5-sonnet-20241022-v2:0`). [`limits_for_model`] compares
//! letters and digits only: the id's vendor prefix, dates (8 digits) and `:N` suffix dropped,
//! `-vN` kept as `vN` when N > 1 (and optional when N = 1), the name's vendor words optional.
//! An id with a geography prefix (`us.`, `eu.`, `apac.`, `global.`, ...) is an inference
//! profile and takes the `Cross-Region` quotas; any other id the `On-demand` ones. The
//! per-day token quota (`Model invocation max tokens per day`) applies to both. When two
//! names give the same (period, metric), the lower value is kept. No matching quota is an
//! error the refresh stores as the model's `errorMessage`, naming the model.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_servicequotas::Client;
use aws_sdk_servicequotas::config::{IdentityCache, Region};
use vmx_domain::capacity::Period;
use vmx_domain::connection::{AwsConfig, DiscoveredLimit};
use vmx_domain::discovered::QuotaSource;
use vmx_domain::inference::ProviderError;

use crate::error::{CallFailure, call_failure};
use crate::sts::{AssumedRoles, RoleCredentialsProvider, RoleKey};

/// The service code of Amazon Bedrock in Service Quotas.
pub const SERVICE_CODE: &str = "bedrock";

#[derive(Debug, Clone)]
pub struct ServiceQuotasOptions {
    /// How long one account's listing serves later connections of the same run.
    pub list_ttl: Duration,
    /// Page size of `ListServiceQuotas` (the API allows 1-100).
    pub page_size: i32,
    /// Most pages read per listing (Bedrock has a few hundred quotas; this bounds a run).
    pub max_pages: usize,
    /// The Service Quotas endpoint, overriding the SDK's (`AWS_ENDPOINT_URL_SERVICE_QUOTAS`,
    /// `AWS_ENDPOINT_URL`, else the regional endpoint). Tests point it at a stub.
    pub endpoint_url: Option<String>,
}

impl Default for ServiceQuotasOptions {
    fn default() -> Self {
        Self {
            list_ttl: Duration::from_secs(600),
            page_size: 100,
            max_pages: 50,
            endpoint_url: None,
        }
    }
}

/// One quota as listed: its name and applied value.
#[derive(Debug, Clone, PartialEq)]
pub struct Quota {
    pub name: String,
    pub value: f64,
}

type Key = (RoleKey, String);
type Listing = Arc<tokio::sync::Mutex<Option<(Instant, Arc<Vec<Quota>>)>>>;

/// The Service Quotas reader of a process: clients and listings per (role, region).
pub struct ServiceQuotas {
    base: SdkConfig,
    roles: Arc<AssumedRoles>,
    options: ServiceQuotasOptions,
    clients: Mutex<HashMap<Key, Client>>,
    listings: Mutex<HashMap<Key, Listing>>,
}

impl ServiceQuotas {
    pub fn new(base: &SdkConfig, roles: Arc<AssumedRoles>, options: ServiceQuotasOptions) -> Self {
        Self {
            base: base.clone(),
            roles,
            options,
            clients: Mutex::new(HashMap::new()),
            listings: Mutex::new(HashMap::new()),
        }
    }

    /// Every Bedrock quota of the connection's account and region, from the listing cache or
    /// one paginated `ListServiceQuotas` (single-flight per (role, region)).
    pub async fn bedrock_quotas(&self, config: &AwsConfig) -> Result<Arc<Vec<Quota>>, String> {
        let key: Key = (RoleKey::of(config), config.region.clone());
        let slot = {
            let mut listings = self
                .listings
                .lock()
                .map_err(|_| "quota cache unavailable".to_owned())?;
            Arc::clone(listings.entry(key.clone()).or_default())
        };
        let mut slot = slot.lock().await;
        if let Some((at, quotas)) = slot.as_ref()
            && at.elapsed() < self.options.list_ttl
        {
            return Ok(Arc::clone(quotas));
        }
        // The role first, so a trust-policy problem reads as one (not as a signing failure).
        self.roles
            .credentials(&key.0)
            .await
            .map_err(|e| provider_message(&e))?;
        let client = self.client(&key)?;
        let quotas = Arc::new(self.list(&client, &config.region).await?);
        *slot = Some((Instant::now(), Arc::clone(&quotas)));
        Ok(quotas)
    }

    async fn list(&self, client: &Client, region: &str) -> Result<Vec<Quota>, String> {
        let mut quotas = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..self.options.max_pages.max(1) {
            let page = client
                .list_service_quotas()
                .service_code(SERVICE_CODE)
                .max_results(self.options.page_size.clamp(1, 100))
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| list_error(&call_failure(&e), region))?;
            quotas.extend(page.quotas().iter().filter_map(|q| {
                Some(Quota {
                    name: q.quota_name()?.to_owned(),
                    value: q.value()?,
                })
            }));
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                _ => return Ok(quotas),
            }
        }
        tracing::warn!(
            pages = self.options.max_pages,
            "Service Quotas listing cut at its page bound"
        );
        Ok(quotas)
    }

    fn client(&self, key: &Key) -> Result<Client, String> {
        let mut clients = self
            .clients
            .lock()
            .map_err(|_| "quota client cache unavailable".to_owned())?;
        if let Some(c) = clients.get(key) {
            return Ok(c.clone());
        }
        let mut b = aws_sdk_servicequotas::config::Builder::from(&self.base)
            .region(Region::new(key.1.clone()))
            .credentials_provider(RoleCredentialsProvider::new(
                Arc::clone(&self.roles),
                key.0.clone(),
            ))
            // The role cache is the one cache (refreshed ahead of expiry, single-flight).
            .identity_cache(IdentityCache::no_cache());
        if let Some(url) = &self.options.endpoint_url {
            b = b.endpoint_url(url.clone());
        }
        let client = Client::from_conf(b.build());
        if clients.len() >= 1000 {
            clients.clear();
        }
        clients.insert(key.clone(), client.clone());
        Ok(client)
    }
}

#[async_trait]
impl QuotaSource for ServiceQuotas {
    async fn model_limits(
        &self,
        config: &AwsConfig,
        model: &str,
    ) -> Result<Vec<DiscoveredLimit>, String> {
        let quotas = self.bedrock_quotas(config).await?;
        let limits = limits_for_model(model, &quotas);
        if limits.is_empty() {
            return Err(format!(
                "no Bedrock quota in Service Quotas ({}) matches model {model}",
                config.region
            ));
        }
        Ok(limits)
    }
}

fn provider_message(e: &ProviderError) -> String {
    match e {
        ProviderError::Unauthorized { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

fn list_error(f: &CallFailure, region: &str) -> String {
    match f {
        CallFailure::Service { code, .. } if code == "AccessDeniedException" => format!(
            "the connection's role may not read Service Quotas in {region}: allow \
             servicequotas:ListServiceQuotas (infra/bedrock-iam-role.yaml, AllowServiceQuotasRead)"
        ),
        CallFailure::Service { code, .. } if code == "NoSuchResourceException" => {
            format!("Service Quotas has no Bedrock quotas in {region}")
        }
        CallFailure::Service { code, .. } => format!("Service Quotas failed in {region}: {code}"),
        CallFailure::Timeout => format!("Service Quotas did not answer in time in {region}"),
        _ => format!("Service Quotas could not be reached in {region}"),
    }
}

/// Which quotas a model id takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    OnDemand,
    CrossRegion,
    /// Per-day quotas name no scope.
    Any,
}

/// What a quota name says: scope, metric, period and the model's display name.
#[derive(Debug, Clone, PartialEq, Eq)]
struct QuotaName {
    scope: Scope,
    metric: &'static str,
    period: Period,
    model: String,
}

fn parse_quota_name(name: &str) -> Option<QuotaName> {
    let lower = name.to_ascii_lowercase();
    let (head, model) = lower.rsplit_once(" for ")?;
    if ["mantle", "batch", "provisioned", "imported", "custom"]
        .iter()
        .any(|w| head.contains(w))
    {
        return None;
    }
    let scope = if head.starts_with("on-demand ") {
        Scope::OnDemand
    } else if head.starts_with("cross-region ") || head.starts_with("global cross-region ") {
        Scope::CrossRegion
    } else if head.starts_with("model invocation max ") {
        Scope::Any
    } else {
        return None;
    };
    let metric = if head.contains(" requests per ") {
        "requests"
    } else if head.contains(" tokens per ") {
        "tokens"
    } else {
        return None;
    };
    let period = if head.ends_with(" per minute") {
        Period::Minute
    } else if head.ends_with(" per day") {
        Period::Day
    } else {
        return None;
    };
    Some(QuotaName {
        scope,
        metric,
        period,
        model: signature(model),
    })
}

/// Letters and digits, lower case.
fn signature(s: &str) -> String {
    s.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Geography prefixes of inference profile ids.
const GEOGRAPHIES: [&str; 8] = ["us", "eu", "apac", "global", "us-gov", "jp", "au", "ca"];

/// Vendor words quota names may start with, as signatures.
const VENDORS: [&str; 16] = [
    "anthropic",
    "amazon",
    "meta",
    "cohere",
    "mistral",
    "mistralai",
    "ai21",
    "ai21labs",
    "deepseek",
    "qwen",
    "openai",
    "writer",
    "stability",
    "stabilityai",
    "twelvelabs",
    "luma",
];

/// The model id's scope and the signatures its quota name may have (vendor words aside).
fn model_signatures(model: &str) -> (Scope, String, Vec<String>) {
    // An ARN names the model or profile after its last '/'.
    let id = model.rsplit('/').next().unwrap_or(model);
    let mut parts = id.split('.');
    let first = parts.next().unwrap_or_default();
    let (scope, vendor, rest): (Scope, &str, Vec<&str>) = if GEOGRAPHIES.contains(&first) {
        let vendor = parts.next().unwrap_or_default();
        (Scope::CrossRegion, vendor, parts.collect())
    } else {
        (Scope::OnDemand, first, parts.collect())
    };
    let rest = rest.join(".");
    let rest = rest.split(':').next().unwrap_or_default();
    let mut words: Vec<&str> = rest
        .split(['-', '.', '_'])
        .filter(|w| !w.is_empty())
        .collect();
    let is_date = |w: &str| w.len() == 8 && w.bytes().all(|b| b.is_ascii_digit());
    words.retain(|w| !is_date(w));
    let version = words
        .last()
        .and_then(|w| w.strip_prefix('v'))
        .and_then(|n| n.parse::<u32>().ok());
    if version.is_some() {
        words.pop();
    }
    let core = signature(&words.concat());
    let candidates = match version {
        Some(n) if n > 1 => vec![format!("{core}v{n}")],
        Some(_) => vec![core.clone(), format!("{core}v1")],
        None => vec![core],
    };
    (scope, signature(vendor), candidates)
}

fn names_model(quota_model: &str, vendor: &str, candidates: &[String]) -> bool {
    candidates.iter().any(|c| {
        quota_model.strip_suffix(c.as_str()).is_some_and(|prefix| {
            prefix.is_empty() || prefix == vendor || VENDORS.contains(&prefix)
        })
    })
}

/// The limits the quotas give `model` (see the module documentation for the matching).
pub fn limits_for_model(model: &str, quotas: &[Quota]) -> Vec<DiscoveredLimit> {
    let (scope, vendor, candidates) = model_signatures(model);
    if candidates.iter().all(String::is_empty) {
        return Vec::new();
    }
    let mut limits: Vec<DiscoveredLimit> = Vec::new();
    for q in quotas {
        let Some(name) = parse_quota_name(&q.name) else {
            continue;
        };
        if !(name.scope == scope || name.scope == Scope::Any)
            || !names_model(&name.model, &vendor, &candidates)
            || !q.value.is_finite()
            || q.value < 0.0
        {
            continue;
        }
        // Quota values are whole numbers sent as doubles; `as` saturates.
        let value = q.value.round() as u64;
        match limits
            .iter_mut()
            .find(|l| l.period == name.period && l.metric == name.metric)
        {
            Some(l) => l.limit = l.limit.min(value),
            None => limits.push(DiscoveredLimit {
                period: name.period,
                metric: name.metric.to_owned(),
                limit: value,
                remaining: None,
                reset: None,
            }),
        }
    }
    limits.sort_by(|a, b| (a.period, &a.metric).cmp(&(b.period, &b.metric)));
    limits
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(name: &str, value: f64) -> Quota {
        Quota {
            name: name.into(),
            value,
        }
    }

    fn quotas() -> Vec<Quota> {
        vec![
            q(
                "On-demand model inference requests per minute for Anthropic Claude 3.5 Sonnet",
                50.0,
            ),
            q(
                "On-demand model inference tokens per minute for Anthropic Claude 3.5 Sonnet",
                400000.0,
            ),
            q(
                "On-demand InvokeModel requests per minute for Anthropic Claude 3.5 Sonnet V2",
                250.0,
            ),
            q(
                "On-demand InvokeModel tokens per minute for Anthropic Claude 3.5 Sonnet V2",
                2000000.0,
            ),
            q(
                "Cross-Region InvokeModel tokens per minute for Anthropic Claude 3.5 Sonnet V2",
                4000000.0,
            ),
            q(
                "Cross-region model inference requests per minute for Anthropic Claude 3.5 Sonnet V2",
                500.0,
            ),
            q(
                "Model invocation max tokens per day for Anthropic Claude 3.5 Sonnet V2",
                2880000000.0,
            ),
            q(
                "Bedrock Mantle input tokens per minute for Anthropic Claude 3.5 Sonnet V2",
                1.0,
            ),
            q(
                "Batch inference job size (in GB) for Anthropic Claude 3.5 Sonnet V2",
                1.0,
            ),
            q(
                "On-demand model inference requests per minute for Meta Llama 3.1 70B Instruct",
                400.0,
            ),
            q(
                "On-demand model inference requests per minute for Meta Llama 3.1 8B Instruct",
                800.0,
            ),
            q(
                "On-demand model inference tokens per minute for Amazon Nova Pro",
                1000000.0,
            ),
            q(
                "On-demand model inference tokens per minute for Amazon Nova Pro",
                800000.0,
            ),
        ]
    }

    fn pairs(limits: &[DiscoveredLimit]) -> Vec<(Period, &str, u64)> {
        limits
            .iter()
            .map(|l| (l.period, l.metric.as_str(), l.limit))
            .collect()
    }

    #[test]
    fn a_v2_model_takes_the_v2_quotas_only() {
        let l = limits_for_model("anthropic.claude-3-5-sonnet-20241022-v2:0", &quotas());
        assert_eq!(
            pairs(&l),
            vec![
                (Period::Minute, "requests", 250),
                (Period::Minute, "tokens", 2_000_000),
                (Period::Day, "tokens", 2_880_000_000),
            ]
        );
    }

    #[test]
    fn a_v1_model_takes_the_unversioned_name() {
        let l = limits_for_model("anthropic.claude-3-5-sonnet-20240620-v1:0", &quotas());
        assert_eq!(
            pairs(&l),
            vec![
                (Period::Minute, "requests", 50),
                (Period::Minute, "tokens", 400_000),
            ]
        );
    }

    #[test]
    fn an_inference_profile_takes_the_cross_region_quotas() {
        let l = limits_for_model("us.anthropic.claude-3-5-sonnet-20241022-v2:0", &quotas());
        assert_eq!(
            pairs(&l),
            vec![
                (Period::Minute, "requests", 500),
                (Period::Minute, "tokens", 4_000_000),
                (Period::Day, "tokens", 2_880_000_000),
            ]
        );
        let arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-sonnet-20241022-v2:0";
        assert_eq!(limits_for_model(arn, &quotas()), l);
    }

    #[test]
    fn similar_names_do_not_match() {
        let l = limits_for_model("meta.llama3-1-8b-instruct-v1:0", &quotas());
        assert_eq!(pairs(&l), vec![(Period::Minute, "requests", 800)]);
        let l = limits_for_model("meta.llama3-1-70b-instruct-v1:0", &quotas());
        assert_eq!(pairs(&l), vec![(Period::Minute, "requests", 400)]);
        assert!(limits_for_model("anthropic.claude-3-5-haiku-20241022-v1:0", &quotas()).is_empty());
        assert!(limits_for_model("", &quotas()).is_empty());
        assert!(limits_for_model("v1", &quotas()).is_empty());
    }

    #[test]
    fn duplicate_names_keep_the_lower_value() {
        let l = limits_for_model("amazon.nova-pro-v1:0", &quotas());
        assert_eq!(pairs(&l), vec![(Period::Minute, "tokens", 800_000)]);
    }

    #[test]
    fn quota_names_outside_the_runtime_endpoint_are_ignored() {
        assert!(
            parse_quota_name("Bedrock Mantle input tokens per minute for Anthropic Claude")
                .is_none()
        );
        assert!(parse_quota_name("Batch inference job size (in GB) for Anthropic").is_none());
        assert!(parse_quota_name("APIs per second for ListFoundationModels").is_none());
        let n = parse_quota_name("On-demand InvokeModel requests per minute for Amazon Nova Pro")
            .unwrap();
        assert_eq!(n.scope, Scope::OnDemand);
        assert_eq!(n.metric, "requests");
        assert_eq!(n.model, "amazonnovapro");
    }

    #[test]
    fn bad_values_are_skipped() {
        let quotas = vec![
            q(
                "On-demand model inference tokens per minute for Amazon Nova Pro",
                f64::NAN,
            ),
            q(
                "On-demand model inference requests per minute for Amazon Nova Pro",
                -1.0,
            ),
        ];
        assert!(limits_for_model("amazon.nova-pro-v1:0", &quotas).is_empty());
    }
}
