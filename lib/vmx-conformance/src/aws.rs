//! Reaching the AWS-API test server (moto) that `scripts/test.sh` starts.

/// The moto endpoint from `AWS_ENDPOINT_URL`, or `None` after printing a skip line. Panics
/// when `VMX_REQUIRE_AWS_TESTS=1` (as `scripts/test.sh` sets), so CI cannot skip silently.
#[allow(clippy::panic)]
pub fn moto(test: &str) -> Option<String> {
    match std::env::var("AWS_ENDPOINT_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            if std::env::var("VMX_REQUIRE_AWS_TESTS").as_deref() == Ok("1") {
                panic!("{test}: AWS_ENDPOINT_URL is unset but VMX_REQUIRE_AWS_TESTS=1");
            }
            eprintln!("SKIPPED {test}: AWS_ENDPOINT_URL is unset (run scripts/test.sh for moto)");
            None
        }
    }
}
