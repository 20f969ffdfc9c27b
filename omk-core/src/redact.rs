//! Secret redaction for free text and JSON values.
//!
//! Agent transcripts, tool output and event logs routinely contain credentials:
//! an agent runs `env`, `cat .env`, `git remote -v`, or echoes an HTTP request.
//! Everything omk persists or shows goes through this module first, so a secret
//! that reaches a log is replaced by [`REDACTED`] instead of being written to disk.
//!
//! The rules favour safety over precision: a false positive hides a harmless
//! string, a false negative leaks a credential. They still avoid the common
//! false positives of a coding-agent workload (`max_tokens=100`, `sk-learn`,
//! token-usage counters), because mangled logs are useless logs.
//!
//! Guarantees:
//! * [`redact_str`] returns [`Cow::Borrowed`] when nothing had to change, after a
//!   single linear [`RegexSet`] scan (the common case: most text holds no secret);
//! * redaction is idempotent: redacting already-redacted output changes nothing;
//! * all matching is linear-time (`regex` crate, no backtracking), so large tool
//!   output cannot trigger quadratic behaviour, and no input can cause a panic.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::{Captures, Match, Regex, RegexSet};
use serde_json::Value;

/// The marker every redacted secret is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// Safety net for the fixpoint loop in [`redact_str`]. Every change strictly
/// shrinks the amount of text outside `[REDACTED]` markers, so the loop always
/// terminates; in practice the second pass already finds nothing to do.
const MAX_PASSES: usize = 4;

/// One value pattern for free text.
///
/// The part replaced by [`REDACTED`] is the first participating capture group
/// whose name starts with `secret`; a pattern without such groups is redacted
/// as a whole. Context outside that group (a key name, `Bearer`, a URL's
/// scheme and host) is kept so the redacted text stays readable.
struct Rule {
    /// Short identifier, used in tests and diagnostics.
    name: &'static str,
    pattern: &'static str,
    /// Last-chance filter on a match; `false` keeps the text as it is.
    accept: fn(&Captures<'_>) -> bool,
}

/// PEM private keys (`RSA`, `EC`, `OPENSSH`, `ENCRYPTED`, PKCS#8, PGP blocks).
/// The whole block goes, header and body, because every body line is key
/// material. A BEGIN without END (truncated output) redacts to the end of the
/// text: the remainder is most likely the rest of the key.
const PRIVATE_KEY_BLOCK: &str = r"(?s)-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----.*?(?:-----END[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----|\z)";

/// `scheme://user:password@host`: database URLs, git remotes with embedded
/// tokens, proxies. Only the password goes; user and host help debugging.
/// The password may contain `@` (the last `@` of the authority ends it).
const URL_CREDENTIALS: &str = r"[A-Za-z][A-Za-z0-9+.-]*://[^\s:/?#@]*:(?P<secret>[^\s/?#]+)@";

/// Slack incoming-webhook URLs: anyone holding the path can post to the
/// channel. The host is kept so the reader knows what was there.
const SLACK_WEBHOOK: &str = r"https://hooks\.slack\.com/services/(?P<secret>[A-Za-z0-9_/-]+)";

/// `Authorization: Basic <base64>`: base64 of `user:password`, trivially
/// reversible. The header name is required because bare base64 is everywhere.
const BASIC_AUTH: &str = r#"(?i:authorization)["']?[ \t]*[:=][ \t]*["']?(?i:basic)[ \t]+(?P<secret>[A-Za-z0-9+/]{8,}={0,2})"#;

/// `Bearer <token>` (RFC 6750 token characters), as sent in HTTP headers and
/// printed by curl -v. The word `Bearer` stays; 16+ characters keeps prose
/// such as "bearer of bad news" intact.
const BEARER_TOKEN: &str = r"(?-u:\b)(?i:bearer)[ \t]+(?P<secret>[A-Za-z0-9._~+/=-]{16,})";

/// JSON Web Tokens: header and payload are base64url JSON, so both start with
/// `eyJ` (`{"`). Signed session or ID tokens, redacted as a whole.
const JWT: &str = r"(?-u:\b)eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}";

/// `sk-` API keys: OpenAI (`sk-proj-`), Anthropic (`sk-ant-api03-`), Moonshot,
/// DeepSeek and other OpenAI-compatible providers. The word boundary and the
/// 16-character minimum spare `sk-learn` and `task-list`.
const PROVIDER_API_KEY: &str = r"(?-u:\b)sk-[A-Za-z0-9_-]{16,}";

/// GitHub personal, OAuth, user-to-server, server-to-server and refresh tokens.
const GITHUB_TOKEN: &str = r"(?-u:\b)gh[pousr]_[A-Za-z0-9]{20,}";

/// GitHub fine-grained personal access tokens.
const GITHUB_PAT: &str = r"(?-u:\b)github_pat_[A-Za-z0-9_]{20,}";

/// AWS access key ids: long-term (`AKIA`) and temporary STS (`ASIA`). Not a
/// secret alone, but it identifies the account and pairs with a secret key.
const AWS_ACCESS_KEY_ID: &str = r"(?-u:\b)(?:AKIA|ASIA)[0-9A-Z]{16}(?-u:\b)";

/// AWS secret access keys carry no recognisable prefix, so they are only found
/// next to their well-known name (`~/.aws/credentials`, env dumps). Exactly 40
/// characters, so a longer run is not cut in half.
const AWS_SECRET_ACCESS_KEY: &str = r#"(?i:aws_secret_access_key)["']?\s*[=:]\s*["']?(?P<secret>[A-Za-z0-9/+=]{40})(?:[^A-Za-z0-9/+=]|\z)"#;

/// Slack bot, user, app, refresh and session tokens.
const SLACK_TOKEN: &str = r"(?-u:\b)xox[abprs]-[A-Za-z0-9-]{10,}";

/// Stripe secret and restricted keys, live and test. Publishable keys
/// (`pk_`) are public by design and left alone.
const STRIPE_KEY: &str = r"(?-u:\b)(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}";

/// `key=value` / `key: value` where the key names a secret: `.env` files,
/// `export FOO_API_KEY=...`, YAML, CLI flags, JSON embedded in text (also
/// backslash-escaped JSON). The key and any quotes are kept, the value goes.
///
/// The key must end in a secret word at a word boundary, which spares
/// `max_tokens=100`, `tokens: 5` and `token_usage`; a separator must follow the
/// key directly, which spares prose ("the password is required"). An auth
/// scheme in front of the value (`token: Bearer abc`) is kept, like `Bearer`.
const SECRET_ASSIGNMENT: &str = r#"(?x)
    (?P<key>
        (?-u:\b)
        (?i:
            (?:[a-z0-9_.-]*[_.-])?                      # namespace: OPENAI_, db., x-
            (?:
                (?:api|secret|private|access)[_-]?key
              | (?:access|auth|refresh|session|client)?(?:token|secret)
              | password | passwd | pwd
            )
        )
        (?-u:\b)
    )
    (?:\\?["'])?                                        # closing quote of a quoted key
    [\ \t]* (?: := | => | [:=] ) [\ \t]*
    (?: (?i: bearer | basic | token ) [\ \t]+ )?        # auth scheme, kept
    (?:
        (?P<secret_done>\[REDACTED\])
      | \\" (?: (?i: bearer | basic | token ) [\ \t]+ )?
        (?P<secret_escaped> (?: [^"\\\n] | \\[^"\n] )* ) \\"
      | " (?: (?i: bearer | basic | token ) [\ \t]+ )?
        (?P<secret_double> (?: [^"\\\n] | \\. )* ) "
      | ' (?: (?i: bearer | basic | token ) [\ \t]+ )?
        (?P<secret_single> [^'\n]* ) '
      | (?P<secret_bare>                                # unquoted; a marker left by an
            [^\s"'`,;&=:<>()\[\]{}\\]                  # earlier rule (say, a URL
            (?: \[REDACTED\] | [^\s"'`,;&)\]}\\] )*     # password) stays inside it
        )
    )
"#;

/// Ordered: whole-block and URL rules run before the token rules so that a
/// token inside a key block or a URL password is removed with its context, and
/// the generic assignment rule runs last so it sees already-redacted values.
const RULES: &[Rule] = &[
    Rule::new("private_key_block", PRIVATE_KEY_BLOCK),
    Rule::new("url_credentials", URL_CREDENTIALS),
    Rule::new("slack_webhook", SLACK_WEBHOOK),
    Rule::new("basic_auth", BASIC_AUTH),
    Rule::new("bearer_token", BEARER_TOKEN),
    Rule::new("jwt", JWT),
    Rule::new("provider_api_key", PROVIDER_API_KEY),
    Rule::new("github_token", GITHUB_TOKEN),
    Rule::new("github_pat", GITHUB_PAT),
    Rule::new("aws_access_key_id", AWS_ACCESS_KEY_ID),
    Rule::new("aws_secret_access_key", AWS_SECRET_ACCESS_KEY),
    Rule::new("slack_token", SLACK_TOKEN),
    Rule::new("stripe_key", STRIPE_KEY),
    Rule {
        name: "secret_assignment",
        pattern: SECRET_ASSIGNMENT,
        accept: is_assigned_secret,
    },
];

/// Unquoted assignment values that are placeholders in code and config, not
/// secrets (`token: null`, `password=None`).
const NON_SECRET_LITERALS: &[&str] = &["null", "true", "false", "none", "nil", "undefined"];

impl Rule {
    const fn new(name: &'static str, pattern: &'static str) -> Self {
        Self {
            name,
            pattern,
            accept: accept_all,
        }
    }
}

fn accept_all(_: &Captures<'_>) -> bool {
    true
}

/// Filter for [`SECRET_ASSIGNMENT`]: skips null-like literals and the
/// `PWD=/current/dir` line of every `env` dump (`pwd` is also short for
/// "password", but a path in `PWD` is the working directory).
fn is_assigned_secret(caps: &Captures<'_>) -> bool {
    let Some(bare) = caps.name("secret_bare") else {
        return true;
    };
    let value = bare.as_str();
    let is_literal = NON_SECRET_LITERALS
        .iter()
        .any(|literal| value.eq_ignore_ascii_case(literal));
    let is_working_dir = caps
        .name("key")
        .is_some_and(|key| key.as_str().eq_ignore_ascii_case("pwd"))
        && value.starts_with('/');
    !is_literal && !is_working_dir
}

/// A [`Rule`] with its regex compiled and its secret groups resolved.
struct CompiledRule {
    rule: &'static Rule,
    regex: Regex,
    /// Indices of the `secret*` capture groups; empty means the whole match.
    secret_groups: Vec<usize>,
}

impl CompiledRule {
    fn compile(rule: &'static Rule) -> Self {
        let regex = Regex::new(rule.pattern)
            .unwrap_or_else(|err| panic!("redaction rule `{}` must compile: {err}", rule.name));
        let secret_groups = regex
            .capture_names()
            .enumerate()
            .filter(|(_, name)| name.is_some_and(|name| name.starts_with("secret")))
            .map(|(index, _)| index)
            .collect();
        Self {
            rule,
            regex,
            secret_groups,
        }
    }

    /// The span of a match to replace, if any.
    fn secret_span<'t>(&self, caps: &Captures<'t>) -> Option<Match<'t>> {
        if self.secret_groups.is_empty() {
            caps.get(0)
        } else {
            self.secret_groups.iter().find_map(|&index| caps.get(index))
        }
    }

    /// Replaces every accepted secret in `text`; `None` when nothing changed.
    fn apply(&self, text: &str) -> Option<String> {
        let mut out: Option<String> = None;
        let mut copied_up_to = 0;
        for caps in self.regex.captures_iter(text) {
            let Some(span) = self.secret_span(&caps) else {
                continue;
            };
            if span.is_empty() || span.as_str() == REDACTED || !(self.rule.accept)(&caps) {
                continue;
            }
            let buffer = out.get_or_insert_with(|| String::with_capacity(text.len()));
            buffer.push_str(&text[copied_up_to..span.start()]);
            buffer.push_str(REDACTED);
            copied_up_to = span.end();
        }
        out.map(|mut buffer| {
            buffer.push_str(&text[copied_up_to..]);
            buffer
        })
    }
}

static COMPILED_RULES: LazyLock<Vec<CompiledRule>> =
    LazyLock::new(|| RULES.iter().map(CompiledRule::compile).collect());

/// All rules in one automaton: one linear scan tells whether (and which) rules
/// can match, so text without secrets is never copied.
static RULE_SET: LazyLock<RegexSet> = LazyLock::new(|| {
    RegexSet::new(RULES.iter().map(|rule| rule.pattern)).expect("redaction rules must compile")
});

/// Redact secrets inside free text.
///
/// Returns [`Cow::Borrowed`] when nothing matched. Rules run in a fixed order
/// and the whole rule list is re-applied until nothing changes, so the result
/// is a fixpoint: `redact_str(&redact_str(x)) == redact_str(x)`.
pub fn redact_str(text: &str) -> Cow<'_, str> {
    let mut current = Cow::Borrowed(text);
    for _ in 0..MAX_PASSES {
        match redact_pass(&current) {
            Some(next) => current = Cow::Owned(next),
            None => break,
        }
    }
    current
}

/// One pass of every rule that matches `text`; `None` when nothing changed.
fn redact_pass(text: &str) -> Option<String> {
    let hits = RULE_SET.matches(text);
    let mut current: Option<String> = None;
    for index in hits.iter() {
        let input = current.as_deref().unwrap_or(text);
        if let Some(next) = COMPILED_RULES[index].apply(input) {
            current = Some(next);
        }
    }
    current
}

/// Redact a JSON value in place: every string is passed through
/// [`redact_str`]; values of secret-named keys (see [`is_secret_key`]) are
/// replaced.
///
/// Under a secret key, a non-empty string or any object/array becomes
/// `"[REDACTED]"`; numbers, booleans and null stay, since under names such as
/// `token` they are counts or flags, never credentials. Object keys are not
/// redacted. Traversal is iterative, so deep nesting cannot overflow the stack.
pub fn redact_value(value: &mut Value) {
    let mut pending = vec![value];
    while let Some(value) = pending.pop() {
        match value {
            Value::String(text) => redact_string_in_place(text),
            Value::Array(items) => pending.extend(items.iter_mut()),
            Value::Object(entries) => {
                for (key, entry) in entries.iter_mut() {
                    if is_secret_key(key) {
                        redact_secret_field(entry);
                    } else {
                        pending.push(entry);
                    }
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
}

/// Convenience: a redacted copy.
pub fn redacted(value: &Value) -> Value {
    let mut copy = value.clone();
    redact_value(&mut copy);
    copy
}

fn redact_string_in_place(text: &mut String) {
    if let Cow::Owned(clean) = redact_str(text) {
        *text = clean;
    }
}

/// Applies the secret-key policy of [`redact_value`] to one field value.
fn redact_secret_field(value: &mut Value) {
    match value {
        Value::String(text) if !text.is_empty() && text != REDACTED => {
            REDACTED.clone_into(text);
        }
        Value::Array(_) | Value::Object(_) => *value = Value::String(REDACTED.to_owned()),
        _ => {}
    }
}

/// Keys whose value is a credential whatever its shape (after normalisation).
const SECRET_KEYS: &[&str] = &[
    "api_key",
    "apikey",
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "auth_token",
    "authorization",
    "password",
    "passwd",
    "secret",
    "client_secret",
    "private_key",
    "credentials",
    "cookie",
    "set_cookie",
];

/// Secret families recognised by suffix (`github_token`, `db_password`,
/// `webhook_secret`). Plural forms (`input_tokens`) are counts and don't match.
const SECRET_KEY_SUFFIXES: &[&str] = &["_token", "_secret", "_password", "_api_key"];

/// `_key` alone is too broad (`sort_key`, `cache_key`); these qualifiers make
/// it a credential (`aws_secret_access_key`, `ssh_private_key`).
const SECRET_KEY_QUALIFIERS: &[&str] = &["api", "secret", "private", "access"];

/// True when a JSON object key names a secret.
///
/// Case-insensitive; `-` and `_` are treated alike and camelCase is split, so
/// `Set-Cookie`, `set_cookie`, `apiKey` and `API_KEY` are all recognised.
pub fn is_secret_key(key: &str) -> bool {
    let key = normalize_key(key);
    SECRET_KEYS.contains(&key.as_str())
        || SECRET_KEY_SUFFIXES
            .iter()
            .any(|suffix| key.ends_with(suffix))
        || has_qualified_key_suffix(&key)
}

/// `<qualifier>_key` as the last two segments of a normalised key.
fn has_qualified_key_suffix(key: &str) -> bool {
    let Some(stem) = key.strip_suffix("_key") else {
        return false;
    };
    let last_segment = stem.rsplit('_').next().unwrap_or(stem);
    SECRET_KEY_QUALIFIERS.contains(&last_segment)
}

/// Lowercase snake_case: `-` becomes `_`, and camelCase humps (`apiKey`,
/// `APIKey`, `OAuthToken`) become `_`-separated segments.
fn normalize_key(key: &str) -> String {
    let mut normalized = String::with_capacity(key.len() + 4);
    let mut previous: Option<char> = None;
    let mut chars = key.chars().peekable();
    while let Some(ch) = chars.next() {
        if ch == '-' {
            normalized.push('_');
        } else {
            let hump = previous.is_some_and(|prev| starts_camel_hump(prev, ch, chars.peek()));
            if hump {
                normalized.push('_');
            }
            normalized.extend(ch.to_lowercase());
        }
        previous = Some(ch);
    }
    normalized
}

/// Whether `ch` begins a new camelCase word: an uppercase letter after a
/// lowercase letter or digit (`apiKey`), or the last capital of an acronym
/// followed by lowercase (`APIKey` → `api_key`).
fn starts_camel_hump(previous: char, ch: char, next: Option<&char>) -> bool {
    ch.is_uppercase()
        && (previous.is_lowercase()
            || previous.is_ascii_digit()
            || (previous.is_uppercase() && next.is_some_and(|next| next.is_lowercase())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // Fake credentials are split with `concat!` where a secret scanner (GitHub
    // push protection) would otherwise flag this file.
    const OPENAI_KEY: &str = "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z";
    const ANTHROPIC_KEY: &str = "sk-ant-api03-Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0Fe-AAAA";
    const MOONSHOT_KEY: &str = "sk-4f8b2c1d9e7a6b5c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a";
    const GITHUB_CLASSIC: &str = concat!("ghp_", "aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6");
    const GITHUB_FINE: &str = concat!("github_pat_", "11ABCDEFG0123456789_abcdefghijKLMNOP");
    const AWS_KEY_ID: &str = concat!("AKIA", "IOSFODNN7EXAMPLE");
    const AWS_SECRET: &str = concat!("wJalrXUtnFEMI/K7MDENG/", "bPxRfiCYEXAMPLEKEY");
    const SLACK_BOT: &str = concat!("xoxb-", "123456789012-1234567890123-AbCdEfGhIjKl");
    const SLACK_HOOK_PATH: &str = concat!("T00000000/B00000000/", "XXXXXXXXXXXXXXXXXXXXXXXX");
    const STRIPE_LIVE: &str = concat!("sk_", "live_", "4eC39HqLyjWDarjtT1zdp7dc");
    const JWT_TOKEN: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";

    const ASSIGNMENT_CASES: &[(&str, &str)] = &[
        ("api_key=abc123", "api_key=[REDACTED]"),
        ("apikey: abc123", "apikey: [REDACTED]"),
        ("X-Api-Key: abc123", "X-Api-Key: [REDACTED]"),
        ("access_token=abc", "access_token=[REDACTED]"),
        ("auth_token = 'abc'", "auth_token = '[REDACTED]'"),
        ("secret: shh", "secret: [REDACTED]"),
        ("CLIENT_SECRET=shh", "CLIENT_SECRET=[REDACTED]"),
        ("password: hunter2", "password: [REDACTED]"),
        ("passwd=hunter2", "passwd=[REDACTED]"),
        ("pwd=hunter2", "pwd=[REDACTED]"),
        ("token=abc", "token=[REDACTED]"),
        ("PASSWORD=\"hunter2\"", "PASSWORD=\"[REDACTED]\""),
        (
            "export OPENAI_API_KEY=abc123",
            "export OPENAI_API_KEY=[REDACTED]",
        ),
        (
            "GITHUB_TOKEN=abc\nNEXT=1",
            "GITHUB_TOKEN=[REDACTED]\nNEXT=1",
        ),
        (
            "db.password: s3cret # comment",
            "db.password: [REDACTED] # comment",
        ),
        (
            "mysql --password=hunter2 -u root",
            "mysql --password=[REDACTED] -u root",
        ),
        (
            "https://api.example.com/v1?api_key=abc&page=2",
            "https://api.example.com/v1?api_key=[REDACTED]&page=2",
        ),
        (r#""password": "x""#, r#""password": "[REDACTED]""#),
        (
            r#"{"apiKey":"abc","n":1}"#,
            r#"{"apiKey":"[REDACTED]","n":1}"#,
        ),
        (r#"'secret_key': 'abc'"#, r#"'secret_key': '[REDACTED]'"#),
        (r#""password": "a\"b""#, r#""password": "[REDACTED]""#),
        (
            r#"{\"token\":\"abc\",\"x\":1}"#,
            r#"{\"token\":\"[REDACTED]\",\"x\":1}"#,
        ),
        ("accessToken := \"abc\"", "accessToken := \"[REDACTED]\""),
        ("'password' => 'abc'", "'password' => '[REDACTED]'"),
        ("token: Bearer short", "token: Bearer [REDACTED]"),
        ("api_key=12345678", "api_key=[REDACTED]"),
    ];

    fn redact(text: &str) -> String {
        redact_str(text).into_owned()
    }

    #[track_caller]
    fn assert_redacts(input: &str, expected: &str) {
        assert_eq!(redact(input), expected, "input: {input:?}");
    }

    #[track_caller]
    fn assert_untouched(input: &str) {
        let out = redact_str(input);
        assert!(
            matches!(out, Cow::Borrowed(_)),
            "expected no redaction of {input:?}, got {out:?}"
        );
    }

    /// (input, expected) pairs; also drive the idempotency and no-panic tests.
    fn redaction_fixtures() -> Vec<(String, String)> {
        let mut fixtures: Vec<(String, String)> = vec![
            (format!("key {OPENAI_KEY} end"), "key [REDACTED] end".into()),
            (ANTHROPIC_KEY.into(), REDACTED.into()),
            (
                format!("MOONSHOT={MOONSHOT_KEY}"),
                "MOONSHOT=[REDACTED]".into(),
            ),
            (
                format!("remote {GITHUB_CLASSIC}."),
                "remote [REDACTED].".into(),
            ),
            (format!("pat:{GITHUB_FINE}"), "pat:[REDACTED]".into()),
            (format!("id {AWS_KEY_ID}"), "id [REDACTED]".into()),
            (
                format!("aws_secret_access_key = {AWS_SECRET}\nregion = x"),
                "aws_secret_access_key = [REDACTED]\nregion = x".into(),
            ),
            (format!("slack {SLACK_BOT}"), "slack [REDACTED]".into()),
            (
                format!("https://hooks.slack.com/services/{SLACK_HOOK_PATH} ok"),
                "https://hooks.slack.com/services/[REDACTED] ok".into(),
            ),
            (format!("stripe {STRIPE_LIVE}"), "stripe [REDACTED]".into()),
            (
                "Authorization: Bearer abcdef0123456789abcdef".into(),
                "Authorization: Bearer [REDACTED]".into(),
            ),
            (
                "Authorization: Basic dXNlcjpodW50ZXIy".into(),
                "Authorization: Basic [REDACTED]".into(),
            ),
            (format!("jwt {JWT_TOKEN} x"), "jwt [REDACTED] x".into()),
            (
                "postgres://app:s3cr3t@db:5432/app".into(),
                "postgres://app:[REDACTED]@db:5432/app".into(),
            ),
            (
                format!(
                    "a\n-----BEGIN RSA {k}-----\nMIIEow\n-----END RSA {k}-----\nb",
                    k = "PRIVATE KEY"
                ),
                "a\n[REDACTED]\nb".into(),
            ),
            (
                "PASSWORD=\"hunter2\"".into(),
                "PASSWORD=\"[REDACTED]\"".into(),
            ),
            (
                "export OPENAI_API_KEY=abc123".into(),
                "export OPENAI_API_KEY=[REDACTED]".into(),
            ),
            (
                r#"{"password": "x", "max_tokens": 100}"#.into(),
                r#"{"password": "[REDACTED]", "max_tokens": 100}"#.into(),
            ),
            (
                format!("token: Bearer {OPENAI_KEY}"),
                "token: Bearer [REDACTED]".into(),
            ),
            (
                format!("https://x-access-token:{GITHUB_CLASSIC}@github.com/o/r.git"),
                "https://x-access-token:[REDACTED]@github.com/o/r.git".into(),
            ),
            (
                format!("秘密 {OPENAI_KEY} ключ password=пароль😀 done"),
                "秘密 [REDACTED] ключ password=[REDACTED] done".into(),
            ),
        ];
        let assignments = ASSIGNMENT_CASES
            .iter()
            .map(|&(input, expected)| (input.to_owned(), expected.to_owned()));
        fixtures.extend(assignments);
        fixtures
    }

    // ---- provider `sk-` keys ------------------------------------------------

    #[test]
    fn redacts_provider_sk_keys() {
        for key in [
            OPENAI_KEY,
            ANTHROPIC_KEY,
            MOONSHOT_KEY,
            "sk-abcdefghijklmnop",
        ] {
            assert_redacts(&format!("use {key} now"), "use [REDACTED] now");
            assert_redacts(&format!("\"{key}\""), "\"[REDACTED]\"");
        }
    }

    #[test]
    fn keeps_sk_lookalike_words() {
        for text in [
            "pip install sk-learn",
            "see task-list and risk-assessment-framework-overview",
            "sk-abcdefghijklmno is 15 chars",
            "ask-abcdefghijklmnopqrstuvwxyz",
        ] {
            assert_untouched(text);
        }
    }

    // ---- GitHub ---------------------------------------------------------------

    #[test]
    fn redacts_github_tokens() {
        for prefix in ["ghp_", "gho_", "ghu_", "ghs_", "ghr_"] {
            let token = format!("{prefix}ABCDEFGHIJKLMNOPQRST0123");
            assert_redacts(&format!("t={token};"), "t=[REDACTED];");
        }
        assert_redacts(&format!("{GITHUB_FINE} x"), "[REDACTED] x");
        assert_redacts(&format!("GH={GITHUB_CLASSIC}"), "GH=[REDACTED]");
    }

    #[test]
    fn keeps_github_lookalikes() {
        assert_untouched("ghp_short1234");
        assert_untouched("ghx_ABCDEFGHIJKLMNOPQRST0123");
        assert_untouched("github_pat_short");
        assert_untouched("xghp_ABCDEFGHIJKLMNOPQRST0123");
    }

    // ---- AWS ------------------------------------------------------------------

    #[test]
    fn redacts_aws_credentials() {
        assert_redacts(&format!("key={AWS_KEY_ID}"), "key=[REDACTED]");
        assert_redacts(concat!("ASIA", "ABCDEFGHIJKLMNOP"), REDACTED);
        assert_redacts(
            &format!("AWS_SECRET_ACCESS_KEY: \"{AWS_SECRET}\""),
            "AWS_SECRET_ACCESS_KEY: \"[REDACTED]\"",
        );
        assert_redacts(
            &format!("aws_secret_access_key={AWS_SECRET}"),
            "aws_secret_access_key=[REDACTED]",
        );
    }

    #[test]
    fn keeps_aws_lookalikes() {
        assert_untouched("AKIA123 is too short");
        assert_untouched(concat!("AKIA", "IOSFODNN7EXAMPLEXX"));
        assert_untouched(concat!("akia", "iosfodnn7example"));
        assert_untouched("aws_region = us-east-1");
    }

    #[test]
    fn aws_secret_rule_needs_exactly_forty_chars() {
        let rule = compiled_rule("aws_secret_access_key");
        let long = format!("aws_secret_access_key={AWS_SECRET}X");
        assert!(rule.apply(&long).is_none());
        assert!(rule.apply("aws_secret_access_key=short").is_none());
    }

    // ---- Slack and Stripe -------------------------------------------------------

    #[test]
    fn redacts_slack_tokens_and_webhooks() {
        for prefix in ["xoxa-", "xoxb-", "xoxp-", "xoxr-", "xoxs-"] {
            assert_redacts(&format!("{prefix}1234567890-abc"), REDACTED);
        }
        assert_redacts(
            &format!("POST https://hooks.slack.com/services/{SLACK_HOOK_PATH}"),
            "POST https://hooks.slack.com/services/[REDACTED]",
        );
    }

    #[test]
    fn keeps_slack_lookalikes() {
        assert_untouched("xoxz-1234567890-abc");
        assert_untouched("xoxb-short");
        assert_untouched("https://hooks.slack.com/");
        assert_untouched("https://api.slack.com/services/T000");
    }

    #[test]
    fn redacts_stripe_secret_and_restricted_keys() {
        assert_redacts(&format!("k {STRIPE_LIVE}"), "k [REDACTED]");
        assert_redacts(concat!("rk_", "test_", "ABCDEFGHIJKLMNOP1234"), REDACTED);
    }

    #[test]
    fn keeps_stripe_publishable_and_short_keys() {
        assert_untouched(concat!("pk_", "live_", "4eC39HqLyjWDarjtT1zdp7dc"));
        assert_untouched(concat!("sk_", "live_", "short"));
        assert_untouched("mask_live_view_enabled_for_everyone");
    }

    // ---- Bearer / Basic / JWT ---------------------------------------------------

    #[test]
    fn redacts_bearer_tokens_keeping_the_scheme() {
        assert_redacts(
            "curl -H 'Authorization: Bearer abc.def_ghi-jkl~mno+pq/r='",
            "curl -H 'Authorization: Bearer [REDACTED]'",
        );
        assert_redacts("bearer 0123456789abcdef", "bearer [REDACTED]");
        assert_redacts("BEARER\t0123456789abcdef", "BEARER\t[REDACTED]");
    }

    #[test]
    fn keeps_bearer_prose_and_short_values() {
        assert_untouched("the bearer of bad news");
        assert_untouched("Bearer short");
        assert_untouched("Authorization: Bearer [REDACTED]");
    }

    #[test]
    fn redacts_basic_auth_headers() {
        assert_redacts(
            "-H \"authorization: basic dXNlcjpwYXNzd29yZA==\"",
            "-H \"authorization: basic [REDACTED]\"",
        );
        assert_redacts(
            r#"{"Authorization": "Basic dXNlcjpodW50ZXIy"}"#,
            r#"{"Authorization": "Basic [REDACTED]"}"#,
        );
    }

    #[test]
    fn keeps_basic_without_authorization_header() {
        assert_untouched("Basic dXNlcjpodW50ZXIy");
        assert_untouched("Authorization: Basic auth");
        assert_untouched("basic authentication is disabled");
    }

    #[test]
    fn redacts_whole_jwts() {
        assert_redacts(&format!("id_token {JWT_TOKEN}"), "id_token [REDACTED]");
        assert_redacts(&format!("({JWT_TOKEN})"), "([REDACTED])");
    }

    #[test]
    fn keeps_jwt_lookalikes() {
        assert_untouched("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0");
        assert_untouched("eyJ alone");
        assert_untouched("eyJabcdef.notjwt.abcdef");
    }

    // ---- URL credentials --------------------------------------------------------

    #[test]
    fn redacts_only_the_password_of_url_credentials() {
        assert_redacts(
            "DATABASE_URL=postgres://app:s3cr3t@db.internal:5432/app",
            "DATABASE_URL=postgres://app:[REDACTED]@db.internal:5432/app",
        );
        assert_redacts(
            "redis://:hunter2@cache:6379",
            "redis://:[REDACTED]@cache:6379",
        );
        assert_redacts(
            "amqp://user:p@ss@broker/vhost",
            "amqp://user:[REDACTED]@broker/vhost",
        );
        assert_redacts(
            "git+https://me:tok@host/repo?x=1 and https://u:p@h",
            "git+https://me:[REDACTED]@host/repo?x=1 and https://u:[REDACTED]@h",
        );
    }

    #[test]
    fn keeps_urls_without_passwords() {
        for text in [
            "https://user@example.com/path",
            "https://example.com:8443/path?mail=a@b.com",
            "git@github.com:org/repo.git",
            "ssh://git@github.com:22/org/repo",
            "see http://localhost:3000 for details",
        ] {
            assert_untouched(text);
        }
    }

    // ---- PEM private keys -------------------------------------------------------

    fn pem(label: &str, body: &str) -> String {
        format!("-----BEGIN {label}-----\n{body}\n-----END {label}-----")
    }

    #[test]
    fn redacts_private_key_blocks_entirely() {
        for label in [
            "PRIVATE KEY",
            "RSA PRIVATE KEY",
            "EC PRIVATE KEY",
            "OPENSSH PRIVATE KEY",
            "ENCRYPTED PRIVATE KEY",
            "PGP PRIVATE KEY BLOCK",
        ] {
            let block = pem(label, "MIIEpAIBAAKCAQEA\nq7BFUwd0mx+Yz==");
            assert_redacts(
                &format!("before\n{block}\nafter"),
                "before\n[REDACTED]\nafter",
            );
        }
    }

    #[test]
    fn redacts_each_of_several_key_blocks() {
        let key = pem("EC PRIVATE KEY", "AAAA");
        let text = format!("{key} middle {key}");
        assert_redacts(&text, "[REDACTED] middle [REDACTED]");
    }

    #[test]
    fn redacts_unterminated_key_block_to_end_of_text() {
        let text = "log line\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEA\ntrunc";
        assert_redacts(text, "log line\n[REDACTED]");
    }

    #[test]
    fn keeps_public_keys_and_certificates() {
        assert_untouched(&pem("PUBLIC KEY", "MIIBIjANBgkqh"));
        assert_untouched(&pem("CERTIFICATE", "MIIDdzCCAl+gAwIBAgIE"));
        assert_untouched("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG me@host");
    }

    // ---- key=value assignments --------------------------------------------------

    #[test]
    fn redacts_values_of_secret_assignments() {
        for &(input, expected) in ASSIGNMENT_CASES {
            assert_redacts(input, expected);
        }
    }

    #[test]
    fn keeps_non_secret_assignments_and_prose() {
        for text in [
            "max_tokens=100",
            "tokens: 5",
            "token_usage: 1234",
            r#"{"input_tokens": 10, "output_tokens": 20, "max_tokens": 4096}"#,
            "the password is required",
            "Enter your password below",
            "password:",
            "password: \n",
            "password=\"\"",
            "if token == expected {",
            "Token::new(kind)",
            "password=<your password>",
            "token: null",
            "api_key=None",
            "PWD=/home/dev/project",
            "OLDPWD=/home/dev",
            "passwords: 3",
            "password_hash_algorithm=argon2",
            "keyboard: us",
            "monkey=banana",
        ] {
            assert_untouched(text);
        }
    }

    #[test]
    fn already_redacted_assignments_are_untouched() {
        for text in [
            "password=[REDACTED]",
            "password: \"[REDACTED]\"",
            "token: Bearer [REDACTED]",
            r#"{\"token\":\"[REDACTED]\"}"#,
            "postgres://app:[REDACTED]@db/app",
            "https://hooks.slack.com/services/[REDACTED]",
            "Authorization: Basic [REDACTED]",
        ] {
            assert_untouched(text);
        }
    }

    // ---- is_secret_key ----------------------------------------------------------

    #[test]
    fn secret_keys_are_recognised() {
        for key in [
            "api_key",
            "apikey",
            "API-KEY",
            "apiKey",
            "APIKey",
            "token",
            "access_token",
            "accessToken",
            "refresh_token",
            "id_token",
            "IDToken",
            "auth_token",
            "authorization",
            "Authorization",
            "password",
            "passwd",
            "secret",
            "client_secret",
            "clientSecret",
            "private_key",
            "credentials",
            "cookie",
            "Set-Cookie",
            "set_cookie",
            "github_token",
            "GITHUB_TOKEN",
            "webhook_secret",
            "db_password",
            "openai_api_key",
            "x-api-key",
            "secret_key",
            "aws_secret_access_key",
            "ssh_private_key",
            "access_key",
            "OAuthToken",
        ] {
            assert!(is_secret_key(key), "{key} should be a secret key");
        }
    }

    #[test]
    fn count_and_ordinary_keys_are_not_secret() {
        for key in [
            "token_usage",
            "tokenUsage",
            "max_context_tokens",
            "context_tokens",
            "tokens",
            "input_tokens",
            "inputTokens",
            "output_tokens",
            "used_tokens",
            "budget_tokens",
            "remaining_budget_tokens",
            "spent_tokens",
            "key",
            "monkey",
            "sort_key",
            "cache-key",
            "monkey_key",
            "passwords_changed",
            "secretary",
            "",
            "ключ",
        ] {
            assert!(!is_secret_key(key), "{key} should not be a secret key");
        }
    }

    // ---- redact_value -----------------------------------------------------------

    #[test]
    fn redact_value_replaces_secret_fields_by_type() {
        let mut value = json!({
            "api_key": "abc",
            "password": "",
            "credentials": {"user": "me", "pass": "x"},
            "cookies": ["a", "b"],
            "cookie": ["a=1", "b=2"],
            "token": 512,
            "refresh_token": null,
            "client_secret": true,
            "model": "gpt",
        });
        redact_value(&mut value);
        assert_eq!(
            value,
            json!({
                "api_key": REDACTED,
                "password": "",
                "credentials": REDACTED,
                "cookies": ["a", "b"],
                "cookie": REDACTED,
                "token": 512,
                "refresh_token": null,
                "client_secret": true,
                "model": "gpt",
            })
        );
    }

    #[test]
    fn redact_value_scans_every_string_recursively() {
        let mut value = json!({
            "events": [
                {"output": format!("export GH={GITHUB_CLASSIC}"), "usage": {"input_tokens": 3}},
                [format!("Bearer {OPENAI_KEY}"), 1, null, ["nested password=hunter2"]],
            ],
            "note": "nothing here",
        });
        redact_value(&mut value);
        assert_eq!(
            value,
            json!({
                "events": [
                    {"output": "export GH=[REDACTED]", "usage": {"input_tokens": 3}},
                    ["Bearer [REDACTED]", 1, null, ["nested password=[REDACTED]"]],
                ],
                "note": "nothing here",
            })
        );
    }

    #[test]
    fn redact_value_never_touches_object_keys() {
        let mut value = json!({ OPENAI_KEY: "value" });
        redact_value(&mut value);
        assert_eq!(value, json!({ OPENAI_KEY: "value" }));
    }

    #[test]
    fn redact_value_handles_scalars_at_the_root() {
        let mut text = json!(format!("key {OPENAI_KEY}"));
        redact_value(&mut text);
        assert_eq!(text, json!("key [REDACTED]"));
        for scalar in [json!(null), json!(true), json!(1.5)] {
            assert_eq!(redacted(&scalar), scalar);
        }
    }

    #[test]
    fn redacted_returns_a_copy() {
        let original = json!({"token": "abc", "log": OPENAI_KEY});
        let copy = redacted(&original);
        assert_eq!(copy, json!({"token": REDACTED, "log": REDACTED}));
        assert_eq!(original["token"], json!("abc"));
    }

    // ---- cross-cutting properties -----------------------------------------------

    #[test]
    fn fixtures_redact_as_expected() {
        for (input, expected) in redaction_fixtures() {
            assert_redacts(&input, &expected);
        }
    }

    #[test]
    fn redaction_is_idempotent_on_all_fixtures() {
        for (input, _) in redaction_fixtures() {
            let once = redact(&input);
            assert_untouched(&once);
            assert_eq!(redact(&once), once);
        }
    }

    #[test]
    fn redact_value_is_idempotent() {
        let value = json!({
            "token": "abc",
            "nested": {"client_secret": {"a": 1}, "items": [STRIPE_LIVE]},
            "texts": redaction_fixtures().into_iter().map(|(input, _)| input).collect::<Vec<_>>(),
        });
        let once = redacted(&value);
        assert_eq!(redacted(&once), once);
    }

    #[test]
    fn overlapping_rules_converge_in_one_call() {
        let cases = [
            ("password=postgres://u:p@db/app", "password=[REDACTED]"),
            (&*format!("api_key={OPENAI_KEY}"), "api_key=[REDACTED]"),
            (
                &*format!("token: \"Bearer {JWT_TOKEN}\""),
                "token: \"Bearer [REDACTED]\"",
            ),
        ];
        for (input, expected) in cases {
            assert_redacts(input, expected);
            assert_untouched(expected);
        }
    }

    #[test]
    fn never_panics_on_any_prefix_or_suffix_of_multibyte_text() {
        for (input, _) in redaction_fixtures() {
            for (index, _) in input.char_indices() {
                let _ = redact_str(&input[..index]);
                let _ = redact_str(&input[index..]);
            }
        }
    }

    #[test]
    fn multibyte_text_around_secrets_is_preserved() {
        assert_redacts(
            &format!("🔑{OPENAI_KEY}🔑 é token=ü€😀"),
            "🔑[REDACTED]🔑 é token=[REDACTED]",
        );
        assert_redacts(
            "Ünïcødé postgres://ü:pässwörd@höst/db ✓",
            "Ünïcødé postgres://ü:[REDACTED]@höst/db ✓",
        );
        assert_untouched("日本語のログ: トークン数 tokens: 5 — ok ✓");
    }

    #[test]
    fn ordinary_text_is_borrowed() {
        assert_untouched("");
        assert_untouched("cargo test -p omk-core -- --nocapture");
        assert_untouched(r#"{"model":"claude","usage":{"input_tokens":12,"output_tokens":7}}"#);
    }

    #[test]
    fn megabyte_of_ordinary_log_text_is_borrowed() {
        let line = "2024-05-01T12:00:00Z INFO omk::run step=3 agent=coder status=ok \
                    max_tokens=4096 used_tokens=1200 path=/work/main/src/lib.rs msg=\"compiled 12 crates\"\n";
        let text = line.repeat(1_048_576 / line.len() + 1);
        assert!(text.len() >= 1_048_576);
        assert!(matches!(redact_str(&text), Cow::Borrowed(_)));
    }

    #[test]
    fn every_rule_compiles_and_is_exercised() {
        assert_eq!(COMPILED_RULES.len(), RULES.len());
        assert_eq!(RULE_SET.len(), RULES.len());
        let fixtures = redaction_fixtures();
        for rule in COMPILED_RULES.iter() {
            let used = fixtures.iter().any(|(input, _)| rule.regex.is_match(input));
            assert!(used, "rule `{}` has no fixture", rule.rule.name);
        }
    }

    fn compiled_rule(name: &str) -> &'static CompiledRule {
        COMPILED_RULES
            .iter()
            .find(|rule| rule.rule.name == name)
            .expect("rule exists")
    }
}
