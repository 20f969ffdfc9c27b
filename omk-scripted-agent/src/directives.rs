//! Parsing of the `[keyword:ARG]` directives that script a turn.
//!
//! Directives are case-sensitive and may appear anywhere in the prompt text;
//! anything that is not a known directive (for example a Markdown link) is
//! ignored. An argument runs up to the first unescaped `]`. Inside an
//! argument `\n` is a newline, `\t` a tab, `\]` a literal `]` and `\\` a
//! backslash; any other backslash is kept as it is.

/// What the final text answer of a turn is made of.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// `[answer:TEXT]`: exactly this text.
    Text(String),
    /// `[json-plan:A|B|C]`: a JSON array of subtask strings.
    JsonPlan(Vec<String>),
}

/// One tool call that the scripted "LLM" makes, one per step.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolStep {
    /// `[write:PATH:CONTENT]`: a `WriteFile` call.
    Write { path: String, content: String },
    /// `[run:COMMAND]`: a `Shell` call.
    Run { command: String },
    /// `[ask:QUESTION]`: an `AskUserQuestion` call (a `QuestionRequest` to
    /// a client that declared `supports_question`).
    Ask { question: String },
}

/// Everything the directives of one prompt ask for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Script {
    pub answer: Option<Answer>,
    pub tools: Vec<ToolStep>,
    pub sleep: Option<f64>,
    pub slow_silent: Option<f64>,
    pub stall: bool,
    pub crash: bool,
    pub crash_once: Option<String>,
    pub malformed: bool,
    pub unknown_event: bool,
    pub tool_call_parts: bool,
    pub tokens: Option<(u64, u64)>,
    pub provider_error: Option<String>,
    /// `[recall]`: answer with the earlier text parts of the prompt.
    pub recall: bool,
    /// `[refuse]` (ACP only): end the turn with `stopReason` `refusal`.
    pub refuse: bool,
    /// `[give-up]` (ACP only): end the turn with `stopReason` `cancelled`
    /// though nobody asked (as Codex does when a permission is refused).
    pub give_up: bool,
    /// `[late-update]` (ACP only): one more update right after the answer.
    pub late_update: bool,
    /// `[mcp]` (ACP only): answer with the MCP servers of the session.
    pub mcp: bool,
}

/// Parses the directives in `text`.
pub fn parse(text: &str) -> Script {
    let mut script = Script::default();
    parse_into(&mut script, text);
    script
}

/// Adds the directives in `text` to `script`. Later directives win for
/// single-valued settings; tool calls accumulate; flags are or-ed.
pub fn parse_into(script: &mut Script, text: &str) {
    let mut rest = text;
    while let Some(pos) = rest.find('[') {
        let after = &rest[pos + 1..];
        match directive(script, after) {
            Some(consumed) => rest = &after[consumed..],
            None => rest = after,
        }
    }
}

const FLAGS: &[&str] = &[
    "stall",
    "crash",
    "malformed",
    "unknown-event",
    "tool-call-parts",
    "recall",
    "refuse",
    "give-up",
    "late-update",
    "mcp",
];

const WITH_ARG: &[&str] = &[
    "answer",
    "write",
    "run",
    "ask",
    "sleep",
    "slow-silent",
    "crash-once",
    "tokens",
    "provider-error",
    "json-plan",
];

/// Tries to read one directive at the start of `s` (just after a `[`).
/// Returns how many bytes it used, or `None` if `s` starts no directive.
fn directive(script: &mut Script, s: &str) -> Option<usize> {
    for flag in FLAGS {
        if let Some(tail) = s.strip_prefix(flag) {
            if tail.starts_with(']') {
                match *flag {
                    "stall" => script.stall = true,
                    "crash" => script.crash = true,
                    "malformed" => script.malformed = true,
                    "unknown-event" => script.unknown_event = true,
                    "recall" => script.recall = true,
                    "refuse" => script.refuse = true,
                    "give-up" => script.give_up = true,
                    "late-update" => script.late_update = true,
                    "mcp" => script.mcp = true,
                    _ => script.tool_call_parts = true,
                }
                return Some(flag.len() + 1);
            }
        }
    }
    for name in WITH_ARG {
        let Some(tail) = s.strip_prefix(name).and_then(|t| t.strip_prefix(':')) else {
            continue;
        };
        let (arg, used) = scan_arg(tail)?;
        if apply(script, name, arg) {
            return Some(name.len() + 1 + used);
        }
        return None;
    }
    None
}

/// Applies one directive with its (unescaped) argument. Returns false when the
/// argument is not valid for it, in which case the text is not a directive.
fn apply(script: &mut Script, name: &str, arg: String) -> bool {
    match name {
        "answer" => script.answer = Some(Answer::Text(arg)),
        "json-plan" => {
            let items = arg
                .split('|')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            script.answer = Some(Answer::JsonPlan(items));
        }
        "write" => {
            let (path, content) = match arg.split_once(':') {
                Some((p, c)) => (p.to_string(), c.to_string()),
                None => (arg, String::new()),
            };
            if path.is_empty() {
                return false;
            }
            script.tools.push(ToolStep::Write { path, content });
        }
        "run" => script.tools.push(ToolStep::Run { command: arg }),
        "ask" if !arg.is_empty() => script.tools.push(ToolStep::Ask { question: arg }),
        "sleep" | "slow-silent" => {
            let Some(secs) = parse_secs(&arg) else {
                return false;
            };
            if name == "sleep" {
                script.sleep = Some(secs);
            } else {
                script.slow_silent = Some(secs);
            }
        }
        "crash-once" => {
            if arg.is_empty() {
                return false;
            }
            script.crash_once = Some(arg);
        }
        "tokens" => {
            let Some((i, o)) = arg.split_once(':') else {
                return false;
            };
            match (i.trim().parse(), o.trim().parse()) {
                (Ok(i), Ok(o)) => script.tokens = Some((i, o)),
                _ => return false,
            }
        }
        "provider-error" => script.provider_error = Some(arg),
        _ => return false,
    }
    true
}

fn parse_secs(arg: &str) -> Option<f64> {
    let secs: f64 = arg.trim().parse().ok()?;
    if secs.is_finite() {
        Some(secs.max(0.0))
    } else {
        None
    }
}

/// Reads an argument up to the first unescaped `]`, unescaping as it goes.
/// Returns the argument and the bytes used (including the `]`).
fn scan_arg(s: &str) -> Option<(String, usize)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            ']' => return Some((out, i + 1)),
            '\\' => match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, ']')) => out.push(']'),
                Some((_, '\\')) => out.push('\\'),
                Some((_, other)) => {
                    out.push('\\');
                    out.push(other);
                }
                None => return None,
            },
            _ => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_has_no_directives() {
        assert_eq!(
            parse("fix the bug in [the parser](src/p.rs)"),
            Script::default()
        );
    }

    #[test]
    fn directives_combine() {
        let s = parse(
            "do it [answer:ok] [write:a/b.txt:x:y\\n] [run:echo hi] [sleep:0.5] [tokens:10:20] [stall] [crash]",
        );
        assert_eq!(s.answer, Some(Answer::Text("ok".into())));
        assert_eq!(
            s.tools,
            vec![
                ToolStep::Write {
                    path: "a/b.txt".into(),
                    content: "x:y\n".into()
                },
                ToolStep::Run {
                    command: "echo hi".into()
                }
            ]
        );
        assert_eq!(s.sleep, Some(0.5));
        assert_eq!(s.tokens, Some((10, 20)));
        assert!(s.stall && s.crash);
        assert!(!s.malformed);
    }

    #[test]
    fn escapes_and_invalid_arguments() {
        let s = parse("[answer:a\\]b\\\\c\\x] [sleep:soon] [tokens:1] [crash-once:f]");
        assert_eq!(s.answer, Some(Answer::Text("a]b\\c\\x".into())));
        assert_eq!(s.sleep, None);
        assert_eq!(s.tokens, None);
        assert!(!s.crash);
        assert_eq!(s.crash_once.as_deref(), Some("f"));
        assert_eq!(parse("[answer:unterminated").answer, None);
    }

    #[test]
    fn json_plan_and_later_wins() {
        let mut s = parse("[answer:first] [json-plan: A | B|C|]");
        assert_eq!(
            s.answer,
            Some(Answer::JsonPlan(vec!["A".into(), "B".into(), "C".into()]))
        );
        parse_into(&mut s, "[provider-error:boom] [slow-silent:2]");
        assert_eq!(s.provider_error.as_deref(), Some("boom"));
        assert_eq!(s.slow_silent, Some(2.0));
    }
}
