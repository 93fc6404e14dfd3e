//! What `template.yaml` lets each function role write, for tests that check the writes a
//! function really makes (counted by [`crate::moto_proxy::SerialProxy`]) against it.
//!
//! A line reader, not a YAML parser: it finds the role's resource block and its
//! `dynamodb:LeadingKeys: [...]` lists, which `scripts/template_checks.py leading-keys`
//! keeps in that one-line form.

/// The template of the workspace.
pub const TEMPLATE: &str = include_str!("../../../template.yaml");

/// The partition-key patterns (`CAP#*`, `CONN`, ...) of every `dynamodb:LeadingKeys`
/// condition in the policies of the role resource `role` (e.g. `InferenceRole`).
pub fn leading_keys(role: &str) -> Vec<String> {
    let header = format!("  {role}:");
    let mut lines = TEMPLATE.lines().skip_while(|l| l.trim_end() != header);
    assert!(
        lines.next().is_some(),
        "template.yaml has no resource {role}"
    );
    let mut keys = Vec::new();
    for line in lines.take_while(|l| !is_resource_header(l)) {
        let Some((_, list)) = line.split_once("dynamodb:LeadingKeys:") else {
            continue;
        };
        let list = list.trim().trim_start_matches('[').trim_end_matches(']');
        keys.extend(
            list.split(',')
                .map(|k| k.trim().trim_matches('"').to_owned())
                .filter(|k| !k.is_empty()),
        );
    }
    assert!(
        !keys.is_empty(),
        "{role} has no dynamodb:LeadingKeys in template.yaml"
    );
    keys
}

/// A line that starts the next resource: two spaces of indentation, then a name.
fn is_resource_header(line: &str) -> bool {
    line.strip_prefix("  ")
        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_alphanumeric()))
}

/// Whether the IAM `StringLike` pattern `pattern` (`*` any run of characters, `?` one)
/// matches `value`.
pub fn string_like(pattern: &str, value: &str) -> bool {
    fn go(p: &[char], v: &[char]) -> bool {
        match p.split_first() {
            None => v.is_empty(),
            Some(('*', rest)) => (0..=v.len()).any(|i| go(rest, &v[i..])),
            Some(('?', rest)) => !v.is_empty() && go(rest, &v[1..]),
            Some((c, rest)) => v.first() == Some(c) && go(rest, &v[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let v: Vec<char> = value.chars().collect();
    go(&p, &v)
}

/// Checks every item write of `written` (`(action, partition key)`) against the
/// `LeadingKeys` of `role`, and that every pattern of the role was used (the role may write
/// nothing the function does not). Panics naming what does not match.
pub fn assert_writes_allowed(role: &str, written: &[(String, String)], every_pattern_used: bool) {
    let patterns = leading_keys(role);
    assert!(!written.is_empty(), "{role}: no item was written");
    for (action, pk) in written {
        assert!(
            patterns.iter().any(|p| string_like(p, pk)),
            "{role} may not {action} an item with pk {pk:?} (template.yaml allows {patterns:?})"
        );
    }
    if every_pattern_used {
        for p in &patterns {
            assert!(
                written.iter().any(|(_, pk)| string_like(p, pk)),
                "{role} may write {p:?}, which this run never wrote: {written:?}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_as_iam_string_like_does() {
        assert!(string_like("CAP#*", "CAP#0190"));
        assert!(string_like("CONN", "CONN"));
        assert!(!string_like("CONN", "CONNX"));
        assert!(!string_like("APIKEY#*", "APIKEYS"));
        assert!(string_like("APIKEY?", "APIKEYS"));
    }

    #[test]
    fn the_roles_have_leading_keys() {
        assert!(leading_keys("InferenceRole").contains(&"CAP#*".to_owned()));
        assert_eq!(
            leading_keys("RefreshRole"),
            ["CAP#*", "REFRESH", "CONN", "DISCH#*"]
        );
    }
}
