//! `parse`: Dockerfile text → [`Dockerfile`] (no variable expansion).

use super::ast::*;
use super::duration::parse_go_duration;
use super::error::ParseError;
use super::flags::Flags;
use super::heredoc::{self, Marker};
use super::lines::LineReader;
use super::mount::parse_mount;
use super::words::{extract_flags, parse_json_array, parse_words, split_whitespace, Json};

/// Parses a Dockerfile. Errors name the line: `Dockerfile:7: unknown instruction: RUNN`.
pub fn parse(source: &str) -> Result<Dockerfile, ParseError> {
    // Every caller is covered, whatever way the text arrived.
    super::check_dockerfile_size(source.len() as u64)
        .map_err(|e| ParseError::new(0, e.to_string()))?;
    let mut reader = LineReader::new(source);
    let mut global_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    let mut warnings = Vec::new();
    let mut any = false;
    while let Some(logical) = reader.next_logical()? {
        any = true;
        let line = logical.line;
        let escape = reader.directives.escape;
        let mut bodies = |m: &Marker| reader.heredoc_body(&m.name, m.chomp);
        let parsed = parse_line(&logical.text, escape, Some(&mut bodies))
            .map_err(|msg| ParseError::new(line, msg))?;
        let original = logical.text.trim().to_string();
        if logical.empty_continuation {
            warnings.push(Warning {
                line,
                message: format!("Empty continuation line found in: {original}"),
            });
        }
        if let Parsed::Instruction(ins) = &parsed {
            if let Some(message) = deprecation(ins, &logical.text) {
                warnings.push(Warning { line, message });
            }
        }
        match parsed {
            Parsed::From {
                base,
                name,
                platform,
            } => {
                if let Some(n) = &name {
                    if stages.iter().any(|s| s.name.as_deref() == Some(n)) {
                        return Err(ParseError::new(line, format!("duplicate stage name {n:?}")));
                    }
                }
                stages.push(Stage {
                    index: stages.len(),
                    name,
                    base,
                    platform,
                    line,
                    original,
                    instructions: Vec::new(),
                });
            }
            Parsed::Instruction(instruction) => {
                let node = Node {
                    line,
                    original,
                    instruction,
                };
                match stages.last_mut() {
                    Some(stage) => stage.instructions.push(node),
                    None if matches!(node.instruction, Instruction::Arg(_)) => {
                        global_args.push(node)
                    }
                    None => {
                        return Err(ParseError::new(
                            line,
                            format!(
                                "no build stage in current context: {} before the first FROM",
                                node.instruction.keyword()
                            ),
                        ))
                    }
                }
            }
            Parsed::UnterminatedHeredoc(name) => {
                return Err(ParseError::new(
                    line,
                    format!("unterminated heredoc <<{name}"),
                ));
            }
        }
    }
    if !any {
        return Err(ParseError::new(0, "file with no instructions"));
    }
    if stages.is_empty() {
        return Err(ParseError::new(
            0,
            "dockerfile contains no stages to build (missing FROM)",
        ));
    }
    Ok(Dockerfile {
        directives: reader.directives,
        global_args,
        stages,
        warnings,
    })
}

/// BuildKit's deprecation checks (MaintainerDeprecated,
/// LegacyKeyValueFormat).
fn deprecation(ins: &Instruction, text: &str) -> Option<String> {
    match ins {
        Instruction::Maintainer(_) => {
            Some("MAINTAINER instruction is deprecated in favor of using label".to_string())
        }
        Instruction::Env(kvs) | Instruction::Label(kvs) if kvs.len() == 1 => {
            let kw = ins.keyword();
            // The legacy form has no `=` before the first blank.
            let args = text.trim().get(kw.len()..).unwrap_or("").trim_start();
            let first = args.split(char::is_whitespace).next().unwrap_or("");
            (!first.contains('=')).then(|| {
                format!(
                    "\"{kw} key=value\" should be used instead of legacy \"{kw} key value\" format"
                )
            })
        }
        _ => None,
    }
}

enum Parsed {
    From {
        base: String,
        name: Option<String>,
        platform: Option<String>,
    },
    Instruction(Instruction),
    UnterminatedHeredoc(String),
}

/// Reads the body of a heredoc from the lines after the instruction.
type BodyReader<'a> = dyn FnMut(&Marker) -> Option<String> + 'a;

/// Parses one logical line. `bodies` is `None` where heredocs are not
/// possible (ONBUILD triggers).
fn parse_line(
    text: &str,
    escape: char,
    bodies: Option<&mut BodyReader<'_>>,
) -> Result<Parsed, String> {
    let text = text.trim();
    let (keyword, args) = match text.find(char::is_whitespace) {
        Some(i) => (&text[..i], text[i..].trim_start()),
        None => (text, ""),
    };
    let kw = keyword.to_ascii_lowercase();
    let (flag_words, rest) = extract_flags(args);
    let mut flags = Flags::new(&flag_words);
    let upper = keyword.to_ascii_uppercase();
    let instruction = match kw.as_str() {
        "from" => {
            let platform = flags.string("platform")?;
            flags.finish()?;
            return parse_from(rest, platform);
        }
        "run" => {
            let mounts = flags
                .strings("mount")?
                .iter()
                .map(|m| parse_mount(m))
                .collect::<Result<Vec<_>, _>>()?;
            let network = match flags.string("network")?.as_deref() {
                None => None,
                Some("default") => Some(NetworkMode::Default),
                Some("none") => Some(NetworkMode::None),
                Some("host") => Some(NetworkMode::Host),
                Some(other) => return Err(format!("unsupported network mode {other:?}")),
            };
            let security = match flags.string("security")?.as_deref() {
                None => None,
                Some("sandbox") => Some(SecurityMode::Sandbox),
                Some("insecure") => Some(SecurityMode::Insecure),
                Some(other) => return Err(format!("unsupported security mode {other:?}")),
            };
            flags.finish()?;
            if rest.is_empty() {
                return Err("RUN requires at least one argument".to_string());
            }
            let (command, is_json) = command_form(rest)?;
            let heredocs = if is_json {
                Vec::new()
            } else {
                match read_heredocs(rest, bodies)? {
                    Ok(h) => h,
                    Err(name) => return Ok(Parsed::UnterminatedHeredoc(name)),
                }
            };
            Instruction::Run(Run {
                command,
                mounts,
                network,
                security,
                heredocs,
            })
        }
        "copy" | "add" => {
            let from = if kw == "copy" {
                flags.string("from")?
            } else {
                None
            };
            let chown = flags.string("chown")?;
            let chmod = flags.string("chmod")?;
            let link = flags.boolean("link")?;
            let excludes = flags.strings("exclude")?;
            // `--parents` is a COPY-only flag in BuildKit.
            let parents = if kw == "copy" {
                flags.boolean("parents")?
            } else {
                false
            };
            let (checksum, keep_git_dir) = if kw == "add" {
                (flags.string("checksum")?, flags.boolean("keep-git-dir")?)
            } else {
                (None, false)
            };
            flags.finish()?;
            let (mut words, is_json) = match parse_json_array(rest)? {
                Json::Array(v) => (v, true),
                Json::NotJson => (split_whitespace(rest), false),
            };
            let heredocs = if is_json {
                Vec::new()
            } else {
                match read_heredocs(rest, bodies)? {
                    Ok(h) => h,
                    Err(name) => return Ok(Parsed::UnterminatedHeredoc(name)),
                }
            };
            match words.len() {
                0 => return Err(format!("{upper} requires at least two arguments")),
                1 => {
                    return Err(format!(
                        "{upper} requires at least two arguments, but only one was provided. Destination could not be determined"
                    ))
                }
                _ => {}
            }
            let dest = words.pop().unwrap_or_default();
            if !is_json && heredoc::parse_marker(&dest).is_some() {
                return Err(format!("{upper} cannot accept a heredoc as a destination"));
            }
            let sources = words
                .into_iter()
                .map(|w| {
                    let marker = if is_json {
                        None
                    } else {
                        heredoc::parse_marker(&w)
                    };
                    match marker.and_then(|m| heredocs.iter().find(|h| h.name == m.name)) {
                        Some(h) => Source::Heredoc(h.clone()),
                        None => Source::Path(w),
                    }
                })
                .collect();
            let files = FileSpec {
                sources,
                dest,
                chown,
                chmod,
                link,
                excludes,
                parents,
            };
            if kw == "copy" {
                Instruction::Copy(Copy { files, from })
            } else {
                Instruction::Add(Add {
                    files,
                    checksum,
                    keep_git_dir,
                })
            }
        }
        "healthcheck" => return parse_healthcheck(rest, flags).map(Parsed::Instruction),
        "onbuild" => {
            // ONBUILD itself has no flags; `rest` starts at the trigger keyword.
            flags.finish()?;
            let expr = rest.trim();
            if expr.is_empty() {
                return Err("ONBUILD requires at least one argument".to_string());
            }
            // The trigger may carry heredocs (`ONBUILD RUN <<EOF`).
            let trigger = match parse_trigger(expr, escape, bodies)? {
                Parsed::Instruction(i) => i,
                other => return Ok(other),
            };
            Instruction::OnBuild(OnBuild {
                expression: expr.to_string(),
                trigger: Box::new(trigger),
            })
        }
        _ => {
            // Report a misspelt keyword before complaining about its flags.
            if !KEYWORDS.contains(&upper.as_str()) {
                return Err(unknown_instruction(keyword));
            }
            flags.finish()?;
            simple_instruction(&kw, &upper, rest, escape)?
        }
    };
    Ok(Parsed::Instruction(instruction))
}

/// Parses an ONBUILD trigger expression (`RUN make`, `COPY . /src`).
/// ONBUILD, FROM and MAINTAINER are not allowed as triggers.
fn parse_trigger(
    expr: &str,
    escape: char,
    bodies: Option<&mut BodyReader<'_>>,
) -> Result<Parsed, String> {
    let kw = expr
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_uppercase();
    match kw.as_str() {
        "" => return Err("ONBUILD requires at least one argument".to_string()),
        "ONBUILD" => return Err("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".to_string()),
        "FROM" | "MAINTAINER" => return Err(format!("{kw} isn't allowed as an ONBUILD trigger")),
        _ => {}
    }
    match parse_line(expr, escape, bodies)? {
        Parsed::From { .. } => Err(format!("{kw} isn't allowed as an ONBUILD trigger")),
        other => Ok(other),
    }
}

/// Parses one trigger from a base image's `OnBuild` config list (escape
/// character `\`, as BuildKit parses them on their own).
pub fn parse_onbuild_trigger(expr: &str) -> Result<Instruction, ParseError> {
    let err = |e: String| ParseError::new(0, format!("invalid ONBUILD trigger {expr:?}: {e}"));
    match parse_trigger(expr.trim(), '\\', None).map_err(err)? {
        Parsed::Instruction(i) => Ok(i),
        _ => Err(err("not an instruction".to_string())),
    }
}

/// Instructions without flags or heredocs.
fn simple_instruction(
    kw: &str,
    upper: &str,
    rest: &str,
    escape: char,
) -> Result<Instruction, String> {
    let exactly_one = || {
        if rest.is_empty() {
            Err(format!("{upper} requires exactly one argument"))
        } else {
            Ok(rest.to_string())
        }
    };
    let at_least_one = || format!("{upper} requires at least one argument");
    Ok(match kw {
        "cmd" => Instruction::Cmd(command_form(rest)?.0),
        "entrypoint" => Instruction::Entrypoint(command_form(rest)?.0),
        "shell" => match parse_json_array(rest)? {
            Json::Array(v) if v.is_empty() => return Err(at_least_one()),
            Json::Array(v) => Instruction::Shell(v),
            Json::NotJson if rest.is_empty() => return Err(at_least_one()),
            Json::NotJson => {
                return Err("SHELL requires the arguments to be in JSON form".to_string())
            }
        },
        "env" => Instruction::Env(parse_name_val(rest, upper, escape)?),
        "label" => Instruction::Label(parse_name_val(rest, upper, escape)?),
        "arg" => {
            let words = parse_words(rest, escape);
            if words.is_empty() {
                return Err(at_least_one());
            }
            let decls = words
                .into_iter()
                .map(|w| match w.split_once('=') {
                    Some(("", _)) => Err("ARG names can not be blank".to_string()),
                    Some((k, v)) => Ok(ArgDecl {
                        name: k.to_string(),
                        default: Some(v.to_string()),
                    }),
                    None => Ok(ArgDecl {
                        name: w,
                        default: None,
                    }),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Instruction::Arg(decls)
        }
        "expose" => {
            let ports = split_whitespace(rest);
            if ports.is_empty() {
                return Err(at_least_one());
            }
            Instruction::Expose(ports)
        }
        "volume" => {
            let vols = match parse_json_array(rest)? {
                Json::Array(v) => v,
                Json::NotJson => split_whitespace(rest),
            };
            if vols.is_empty() {
                return Err(at_least_one());
            }
            if vols.iter().any(|v| v.trim().is_empty()) {
                return Err("VOLUME specified can not be an empty string".to_string());
            }
            Instruction::Volume(vols)
        }
        "user" => Instruction::User(exactly_one()?),
        "workdir" => Instruction::Workdir(exactly_one()?),
        "stopsignal" => Instruction::StopSignal(exactly_one()?),
        "maintainer" => Instruction::Maintainer(exactly_one()?),
        _ => return Err(unknown_instruction(upper)),
    })
}

const KEYWORDS: [&str; 18] = [
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// `unknown instruction: RUNN (did you mean RUN?)` with the word as written
/// (like BuildKit), the hint only for a close keyword (edit distance ≤ 2).
fn unknown_instruction(word: &str) -> String {
    let upper = word.to_ascii_uppercase();
    let best = KEYWORDS
        .iter()
        .map(|k| (edit_distance(&upper, k), *k))
        .min()
        .filter(|(d, _)| *d <= 2 && *d < word.len());
    match best {
        Some((_, k)) => format!("unknown instruction: {word} (did you mean {k}?)"),
        None => format!("unknown instruction: {word}"),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn parse_from(rest: &str, platform: Option<String>) -> Result<Parsed, String> {
    let args = split_whitespace(rest);
    let name = match args.len() {
        0 => return Err("FROM requires an image name".to_string()),
        1 => None,
        3 if args[1].eq_ignore_ascii_case("as") => {
            let n = args[2].to_ascii_lowercase();
            if !valid_stage_name(&n) {
                return Err(format!(
                    "invalid name for build stage: {:?}, name can't start with a number or contain symbols",
                    args[2]
                ));
            }
            Some(n)
        }
        _ => return Err("FROM requires either one or three arguments".to_string()),
    };
    Ok(Parsed::From {
        base: args[0].clone(),
        name,
        platform,
    })
}

/// `^[a-z][a-z0-9-_\.]*$`
fn valid_stage_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

/// JSON array → exec form; anything else → shell form. Empty → `Exec([])`.
fn command_form(rest: &str) -> Result<(CommandForm, bool), String> {
    if rest.is_empty() {
        return Ok((CommandForm::Exec(Vec::new()), true));
    }
    Ok(match parse_json_array(rest)? {
        Json::Array(v) => (CommandForm::Exec(v), true),
        Json::NotJson => (CommandForm::Shell(rest.to_string()), false),
    })
}

/// Detects heredoc markers in `rest` and reads their bodies. The inner
/// `Err(name)` reports an unterminated heredoc.
fn read_heredocs(
    rest: &str,
    bodies: Option<&mut BodyReader<'_>>,
) -> Result<Result<Vec<Heredoc>, String>, String> {
    let Some(bodies) = bodies else {
        return Ok(Ok(Vec::new()));
    };
    let mut out = Vec::new();
    for m in heredoc::markers(rest) {
        let Some(body) = bodies(&m) else {
            return Ok(Err(m.name));
        };
        out.push(Heredoc {
            content: if m.chomp {
                heredoc::chomp(&body)
            } else {
                body.clone()
            },
            raw: body,
            name: m.name,
            expand: m.expand,
            chomp: m.chomp,
            fd: m.fd,
        });
    }
    Ok(Ok(out))
}

/// ENV / LABEL: `k=v ...` or legacy `k v` (a space before any `=`).
fn parse_name_val(rest: &str, upper: &str, escape: char) -> Result<Vec<KeyValue>, String> {
    let words = parse_words(rest, escape);
    let Some(first) = words.first() else {
        return Err(format!("{upper} requires at least one argument"));
    };
    if !first.contains('=') {
        let mut parts = rest.splitn(2, char::is_whitespace);
        let key = parts.next().unwrap_or("");
        let value = parts.next().map(str::trim_start).unwrap_or("");
        if value.is_empty() {
            return Err(format!("{upper} must have two arguments"));
        }
        return Ok(vec![KeyValue {
            key: key.to_string(),
            value: value.to_string(),
        }]);
    }
    words
        .iter()
        .map(|w| match w.split_once('=') {
            None => Err(format!(
                "Syntax error - can't find = in {w:?}. Must be of the form: name=value"
            )),
            Some(("", _)) => Err(format!("{upper} names can not be blank")),
            Some((k, v)) => Ok(KeyValue {
                key: k.to_string(),
                value: v.to_string(),
            }),
        })
        .collect()
}

fn parse_healthcheck(rest: &str, mut flags: Flags) -> Result<Instruction, String> {
    let (typ, cmd) = match rest.find(char::is_whitespace) {
        Some(i) => (&rest[..i], rest[i..].trim_start()),
        None => (rest, ""),
    };
    let durations = ["interval", "timeout", "start-period", "start-interval"]
        .map(|name| flags.string(name).map(|v| (name, v)));
    let retries = flags.string("retries")?;
    flags.finish()?;
    if typ.is_empty() {
        return Err("HEALTHCHECK requires at least one argument".to_string());
    }
    match typ.to_ascii_uppercase().as_str() {
        "NONE" => {
            if !cmd.is_empty() {
                return Err("HEALTHCHECK NONE takes no arguments".to_string());
            }
            Ok(Instruction::Healthcheck(Healthcheck::None))
        }
        "CMD" => {
            let (command, _) = command_form(cmd)?;
            if matches!(&command, CommandForm::Exec(v) if v.is_empty()) {
                return Err("Missing command after HEALTHCHECK CMD".to_string());
            }
            let mut parsed = [None; 4];
            for (slot, d) in parsed.iter_mut().zip(durations) {
                let (name, value) = d?;
                if let Some(v) = value.filter(|v| !v.is_empty()) {
                    let d = parse_go_duration(&v).map_err(|e| format!("--{name}: {e}"))?;
                    if d.is_zero() {
                        continue;
                    }
                    if d < std::time::Duration::from_millis(1) {
                        return Err(format!("Interval \"{name}\" cannot be less than 1ms"));
                    }
                    *slot = Some(d);
                }
            }
            let retries = match retries.filter(|v| !v.is_empty()) {
                None => None,
                Some(v) => {
                    let n: i64 = v
                        .parse()
                        .map_err(|_| format!("invalid --retries value {v:?}"))?;
                    if n < 0 {
                        return Err(format!("--retries cannot be negative ({n})"));
                    }
                    u32::try_from(n).ok().filter(|&n| n > 0)
                }
            };
            let [interval, timeout, start_period, start_interval] = parsed;
            Ok(Instruction::Healthcheck(Healthcheck::Check(HealthConfig {
                command,
                interval,
                timeout,
                start_period,
                start_interval,
                retries,
            })))
        }
        other => Err(format!("Unknown type {other:?} in HEALTHCHECK (try CMD)")),
    }
}
