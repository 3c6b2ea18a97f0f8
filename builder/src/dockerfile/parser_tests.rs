//! Tests of `parse` (instruction syntax, heredocs, errors with line numbers).

use super::*;
use std::time::Duration;

fn only_stage(src: &str) -> Stage {
    let df = parse(src).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(df.stages.len(), 1);
    df.stages.into_iter().next().unwrap()
}

/// Parses `FROM x` + `line` and returns the single instruction.
fn one(line: &str) -> Instruction {
    let st = only_stage(&format!("FROM x\n{line}\n"));
    assert_eq!(st.instructions.len(), 1, "{line}");
    st.instructions.into_iter().next().unwrap().instruction
}

fn err(src: &str) -> String {
    parse(src).map(|_| ()).unwrap_err().to_string()
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn stages_names_platform_and_global_args() {
    let df = parse(
        "# syntax=docker/dockerfile:1\nARG BASE=alpine\nARG V\nFROM --platform=$BUILDPLATFORM ${BASE}:3 AS Build\nRUN make\n\nfrom build as final\nCOPY --from=build /a /b\n",
    )
    .unwrap();
    assert_eq!(df.directives.syntax.as_deref(), Some("docker/dockerfile:1"));
    assert_eq!(df.global_args.len(), 2);
    assert_eq!(df.global_args[0].line, 2);
    assert_eq!(
        df.global_args[0].instruction,
        Instruction::Arg(vec![ArgDecl {
            name: "BASE".into(),
            default: Some("alpine".into())
        }])
    );
    assert_eq!(df.stages.len(), 2);
    let b = &df.stages[0];
    assert_eq!(
        (b.index, b.name.as_deref(), b.base.as_str()),
        (0, Some("build"), "${BASE}:3")
    );
    assert_eq!(b.platform.as_deref(), Some("$BUILDPLATFORM"));
    assert_eq!(b.line, 4);
    assert_eq!(b.instructions[0].line, 5);
    assert_eq!(b.instructions[0].original, "RUN make");
    let f = &df.stages[1];
    assert_eq!(
        (f.index, f.name.as_deref(), f.base.as_str(), f.line),
        (1, Some("final"), "build", 7)
    );
}

#[test]
fn keywords_are_case_insensitive() {
    assert_eq!(one("rUn echo hi"), one("RUN echo hi"));
    assert_eq!(one("workdir /x"), Instruction::Workdir("/x".into()));
}

#[test]
fn run_forms_and_flags() {
    assert_eq!(
        one("RUN echo \"$HOME\" && ls"),
        Instruction::Run(Run {
            command: CommandForm::Shell("echo \"$HOME\" && ls".into()),
            mounts: vec![],
            network: None,
            security: None,
            heredocs: vec![],
        })
    );
    let Instruction::Run(r) = one(r#"RUN ["/bin/echo", "a b", "$HOME"]"#) else {
        panic!()
    };
    assert_eq!(
        r.command,
        CommandForm::Exec(s(&["/bin/echo", "a b", "$HOME"]))
    );
    // Not valid JSON → shell form, as in Docker.
    let Instruction::Run(r) = one("RUN [ -f /x ] && echo y") else {
        panic!()
    };
    assert_eq!(r.command, CommandForm::Shell("[ -f /x ] && echo y".into()));

    let Instruction::Run(r) = one(
        "RUN --mount=type=cache,target=/root/.cache --mount=type=secret,id=tok --network=none --security=insecure make",
    ) else {
        panic!()
    };
    assert_eq!(r.mounts.len(), 2);
    assert_eq!(r.mounts[0].kind, MountType::Cache);
    assert_eq!(r.mounts[1].kind, MountType::Secret);
    assert_eq!(r.network, Some(NetworkMode::None));
    assert_eq!(r.security, Some(SecurityMode::Insecure));
    assert_eq!(r.command, CommandForm::Shell("make".into()));
    let Instruction::Run(r) = one("RUN --network=host true") else {
        panic!()
    };
    assert_eq!(r.network, Some(NetworkMode::Host));
}

#[test]
fn continuation_with_comments_and_backtick_escape() {
    let st = only_stage("FROM x\nRUN apt-get update && \\\n    # comment inside\n\n    apt-get install -y curl\nENV A=1\n");
    assert_eq!(
        st.instructions[0].original,
        "RUN apt-get update &&     apt-get install -y curl"
    );
    assert_eq!(st.instructions[1].line, 6);

    let df = parse("# escape=`\nFROM x\nRUN dir c:\\ `\n  && echo done\n").unwrap();
    assert_eq!(df.directives.escape, '`');
    assert_eq!(
        df.stages[0].instructions[0].instruction,
        one_run_shell("dir c:\\   && echo done")
    );
}

fn one_run_shell(cmd: &str) -> Instruction {
    Instruction::Run(Run {
        command: CommandForm::Shell(cmd.into()),
        mounts: vec![],
        network: None,
        security: None,
        heredocs: vec![],
    })
}

#[test]
fn heredocs_in_run() {
    let st = only_stage("FROM x\nRUN <<EOF\napt-get update\necho $HOME\nEOF\nRUN <<-'END' python3\n\tprint('hi')\n\tEND\nENV A=1\n");
    let Instruction::Run(r) = &st.instructions[0].instruction else {
        panic!()
    };
    assert_eq!(r.command, CommandForm::Shell("<<EOF".into()));
    assert_eq!(r.heredocs.len(), 1);
    assert_eq!(r.heredocs[0].name, "EOF");
    assert_eq!(r.heredocs[0].content, "apt-get update\necho $HOME\n");
    assert!(r.heredocs[0].expand);
    let Instruction::Run(r) = &st.instructions[1].instruction else {
        panic!()
    };
    assert_eq!(st.instructions[1].line, 6);
    assert_eq!(st.instructions[1].original, "RUN <<-'END' python3");
    assert_eq!(r.heredocs[0].content, "print('hi')\n");
    assert!(r.heredocs[0].chomp && !r.heredocs[0].expand);
    assert_eq!(st.instructions[2].line, 9);

    let st = only_stage("FROM x\nRUN <<A cat > /a && <<\"B\" cat > /b\na\nA\nb $x\nB\n");
    let Instruction::Run(r) = &st.instructions[0].instruction else {
        panic!()
    };
    let got: Vec<_> = r
        .heredocs
        .iter()
        .map(|h| (h.name.as_str(), h.content.as_str(), h.expand))
        .collect();
    assert_eq!(got, vec![("A", "a\n", true), ("B", "b $x\n", false)]);

    // Exec form never has heredocs.
    let Instruction::Run(r) = one(r#"RUN ["cat", "<<EOF"]"#) else {
        panic!()
    };
    assert!(r.heredocs.is_empty());
}

#[test]
fn heredoc_in_copy_and_add() {
    let st = only_stage(
        "FROM x\nCOPY --chmod=755 <<EOF /usr/local/bin/hello\n#!/bin/sh\necho hello\nEOF\n",
    );
    let Instruction::Copy(c) = &st.instructions[0].instruction else {
        panic!()
    };
    assert_eq!(c.files.dest, "/usr/local/bin/hello");
    assert_eq!(c.files.chmod.as_deref(), Some("755"));
    assert_eq!(c.files.chmod_bits(), Ok(Some(0o755)));
    match &c.files.sources[..] {
        [Source::Heredoc(h)] => {
            assert_eq!(h.name, "EOF");
            assert_eq!(h.content, "#!/bin/sh\necho hello\n");
        }
        other => panic!("{other:?}"),
    }
    let st = only_stage("FROM x\nADD <<one <<two ./\n1\none\n2\ntwo\n");
    let Instruction::Add(a) = &st.instructions[0].instruction else {
        panic!()
    };
    assert_eq!(a.files.sources.len(), 2);
    assert_eq!(a.files.dest, "./");
}

#[test]
fn copy_and_add_flags() {
    let Instruction::Copy(c) =
        one("COPY --from=build --chown=app:app --chmod=0644 --link --exclude=*.md --exclude=tmp --parents a b /dst/")
    else {
        panic!()
    };
    assert_eq!(c.from.as_deref(), Some("build"));
    assert_eq!(c.files.chown.as_deref(), Some("app:app"));
    assert_eq!(c.files.chmod_bits(), Ok(Some(0o644)));
    assert!(c.files.link && c.files.parents);
    assert_eq!(c.files.excludes, s(&["*.md", "tmp"]));
    assert_eq!(
        c.files.sources,
        vec![Source::Path("a".into()), Source::Path("b".into())]
    );
    assert_eq!(c.files.dest, "/dst/");

    let Instruction::Copy(c) = one(r#"COPY ["with space", "/dst dir/"]"#) else {
        panic!()
    };
    assert_eq!(c.files.sources, vec![Source::Path("with space".into())]);
    assert_eq!(c.files.dest, "/dst dir/");

    let Instruction::Add(a) = one(
        "ADD --checksum=sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d --keep-git-dir=true https://example.com/a.tar.gz /",
    ) else {
        panic!()
    };
    assert!(a.checksum.as_deref().unwrap().starts_with("sha256:"));
    assert!(a.keep_git_dir);
    assert_eq!(
        a.files.sources,
        vec![Source::Path("https://example.com/a.tar.gz".into())]
    );

    let bad_mode = FileSpec {
        sources: vec![],
        dest: String::new(),
        chown: None,
        chmod: Some("9".into()),
        link: false,
        excludes: vec![],
        parents: false,
    };
    assert!(bad_mode.chmod_bits().is_err());
    for bad in ["", "+755", "-1", "8", "17777", "rwx"] {
        assert!(parse_octal_mode(bad).is_err(), "{bad:?}");
    }
    assert_eq!(parse_octal_mode("0755"), Ok(0o755));
    assert_eq!(parse_octal_mode("4755"), Ok(0o4755));
}

#[test]
fn env_label_arg() {
    assert_eq!(
        one(r#"ENV A=1 B="two words" C=three\ words D='$lit'"#),
        Instruction::Env(vec![
            KeyValue {
                key: "A".into(),
                value: "1".into()
            },
            KeyValue {
                key: "B".into(),
                value: "\"two words\"".into()
            },
            KeyValue {
                key: "C".into(),
                value: "three\\ words".into()
            },
            KeyValue {
                key: "D".into(),
                value: "'$lit'".into()
            },
        ])
    );
    // Legacy form: everything after the key is the value.
    assert_eq!(
        one("ENV MY_VAR  some value here"),
        Instruction::Env(vec![KeyValue {
            key: "MY_VAR".into(),
            value: "some value here".into()
        }])
    );
    assert_eq!(
        one(
            r#"LABEL "com.example.vendor"="ACME Inc" version=1.0 description="multi \
word""#
        ),
        Instruction::Label(vec![
            KeyValue {
                key: "\"com.example.vendor\"".into(),
                value: "\"ACME Inc\"".into()
            },
            KeyValue {
                key: "version".into(),
                value: "1.0".into()
            },
            KeyValue {
                key: "description".into(),
                value: "\"multi word\"".into()
            },
        ])
    );
    assert_eq!(
        one("ARG A B=2 C="),
        Instruction::Arg(vec![
            ArgDecl {
                name: "A".into(),
                default: None
            },
            ArgDecl {
                name: "B".into(),
                default: Some("2".into())
            },
            ArgDecl {
                name: "C".into(),
                default: Some("".into())
            },
        ])
    );
}

#[test]
fn expose_volume_user_workdir_etc() {
    assert_eq!(
        one("EXPOSE 80/tcp 53/udp $PORT"),
        Instruction::Expose(s(&["80/tcp", "53/udp", "$PORT"]))
    );
    assert_eq!(
        one(r#"VOLUME ["/data", "/logs"]"#),
        Instruction::Volume(s(&["/data", "/logs"]))
    );
    assert_eq!(
        one("VOLUME /data /logs"),
        Instruction::Volume(s(&["/data", "/logs"]))
    );
    assert_eq!(one("USER app:staff"), Instruction::User("app:staff".into()));
    assert_eq!(
        one("WORKDIR /path/$DIR"),
        Instruction::Workdir("/path/$DIR".into())
    );
    assert_eq!(
        one("STOPSIGNAL SIGKILL"),
        Instruction::StopSignal("SIGKILL".into())
    );
    assert_eq!(
        one("MAINTAINER Jane <j@x.org>"),
        Instruction::Maintainer("Jane <j@x.org>".into())
    );
    assert_eq!(
        one(r#"SHELL ["powershell", "-command"]"#),
        Instruction::Shell(s(&["powershell", "-command"]))
    );
    assert_eq!(
        one(r#"CMD ["nginx", "-g", "daemon off;"]"#),
        Instruction::Cmd(CommandForm::Exec(s(&["nginx", "-g", "daemon off;"])))
    );
    assert_eq!(
        one("CMD echo $HOME"),
        Instruction::Cmd(CommandForm::Shell("echo $HOME".into()))
    );
    assert_eq!(
        one("ENTRYPOINT []"),
        Instruction::Entrypoint(CommandForm::Exec(vec![]))
    );
    assert_eq!(
        one("ENTRYPOINT exec top -b"),
        Instruction::Entrypoint(CommandForm::Shell("exec top -b".into()))
    );
}

#[test]
fn healthcheck() {
    assert_eq!(
        one("HEALTHCHECK NONE"),
        Instruction::Healthcheck(Healthcheck::None)
    );
    let Instruction::Healthcheck(Healthcheck::Check(h)) = one(
        "HEALTHCHECK --interval=5m --timeout=3s --start-period=1m30s --start-interval=500ms --retries=3 CMD curl -f http://localhost/ || exit 1",
    ) else {
        panic!()
    };
    assert_eq!(h.interval, Some(Duration::from_secs(300)));
    assert_eq!(h.timeout, Some(Duration::from_secs(3)));
    assert_eq!(h.start_period, Some(Duration::from_secs(90)));
    assert_eq!(h.start_interval, Some(Duration::from_millis(500)));
    assert_eq!(h.retries, Some(3));
    assert_eq!(
        h.test(),
        s(&["CMD-SHELL", "curl -f http://localhost/ || exit 1"])
    );
    let Instruction::Healthcheck(Healthcheck::Check(h)) =
        one(r#"healthcheck cmd ["/bin/check", "-q"]"#)
    else {
        panic!()
    };
    assert_eq!(h.test(), s(&["CMD", "/bin/check", "-q"]));
    assert_eq!(h.interval, None);
}

#[test]
fn onbuild_trigger_with_heredoc() {
    let st = only_stage("FROM x\nONBUILD RUN <<EOF\necho hi\nEOF\nUSER app\n");
    let Instruction::OnBuild(o) = &st.instructions[0].instruction else {
        panic!()
    };
    assert_eq!(o.expression, "RUN <<EOF");
    let Instruction::Run(r) = o.trigger.as_ref() else {
        panic!()
    };
    assert_eq!(r.heredocs[0].content, "echo hi\n");
    assert_eq!(st.instructions[1].line, 5);
    assert!(
        err("FROM x\nONBUILD COPY <<EOF /a\n").contains("Dockerfile:2: unterminated heredoc <<EOF")
    );
}

#[test]
fn onbuild() {
    let Instruction::OnBuild(o) = one("ONBUILD COPY --from=x . /app/src") else {
        panic!()
    };
    assert_eq!(o.expression, "COPY --from=x . /app/src");
    assert!(matches!(*o.trigger, Instruction::Copy(ref c) if c.from.as_deref() == Some("x")));
    let Instruction::OnBuild(o) = one("onbuild run make $X") else {
        panic!()
    };
    assert_eq!(*o.trigger, one_run_shell("make $X"));
}

#[test]
fn errors_name_the_line() {
    let cases: &[(&str, &str)] = &[
        (
            "FROM x\nRUN a\n\n\n\n\nRUNN b\n",
            "Dockerfile:7: unknown instruction: RUNN",
        ),
        ("# c\n\nFROM\n", "Dockerfile:3: FROM requires an image name"),
        (
            "FROM a b\n",
            "Dockerfile:1: FROM requires either one or three arguments",
        ),
        (
            "FROM a FOR b\n",
            "Dockerfile:1: FROM requires either one or three arguments",
        ),
        (
            "FROM x\nADD --parents a b\n",
            "Dockerfile:2: unknown flag: parents",
        ),
        (
            "FROM a AS 1st\n",
            "Dockerfile:1: invalid name for build stage: \"1st\"",
        ),
        (
            "FROM a AS x\nFROM b AS X\n",
            "Dockerfile:2: duplicate stage name \"x\"",
        ),
        (
            "FROM x\nRUN <<EOF\nls\n",
            "Dockerfile:2: unterminated heredoc <<EOF",
        ),
        (
            "FROM x\nRUN\n",
            "Dockerfile:2: RUN requires at least one argument",
        ),
        (
            "FROM x\nRUN --mount=type=cache echo\n",
            "Dockerfile:2: mount type cache requires a target",
        ),
        (
            "FROM x\nRUN --network=bridge echo\n",
            "Dockerfile:2: unsupported network mode",
        ),
        (
            "FROM x\nRUN --bogus echo\n",
            "Dockerfile:2: unknown flag: bogus",
        ),
        (
            "FROM x\nCOPY --from=a\n",
            "Dockerfile:2: COPY requires at least two arguments",
        ),
        ("FROM x\nCOPY a\n", "Destination could not be determined"),
        (
            "FROM x\nADD --from=a b c\n",
            "Dockerfile:2: unknown flag: from",
        ),
        (
            "FROM x\nCOPY --checksum=sha256:x a b\n",
            "unknown flag: checksum",
        ),
        (
            "FROM x\nCOPY a <<EOF\nx\nEOF\n",
            "Dockerfile:2: COPY cannot accept a heredoc as a destination",
        ),
        (
            "FROM x\nENV\n",
            "Dockerfile:2: ENV requires at least one argument",
        ),
        (
            "FROM x\nENV A\n",
            "Dockerfile:2: ENV must have two arguments",
        ),
        (
            "FROM x\nENV A=1 B\n",
            "Dockerfile:2: Syntax error - can't find = in \"B\"",
        ),
        (
            "FROM x\nENV =1\n",
            "Dockerfile:2: ENV names can not be blank",
        ),
        ("FROM x\nLABEL\n", "LABEL requires at least one argument"),
        (
            "FROM x\nARG =x\n",
            "Dockerfile:2: ARG names can not be blank",
        ),
        ("FROM x\nARG\n", "ARG requires at least one argument"),
        ("FROM x\nEXPOSE\n", "EXPOSE requires at least one argument"),
        (
            "FROM x\nVOLUME [\"\"]\n",
            "VOLUME specified can not be an empty string",
        ),
        (
            "FROM x\nUSER\n",
            "Dockerfile:2: USER requires exactly one argument",
        ),
        ("FROM x\nWORKDIR\n", "WORKDIR requires exactly one argument"),
        (
            "FROM x\nSHELL /bin/sh -c\n",
            "SHELL requires the arguments to be in JSON form",
        ),
        ("FROM x\nSHELL []\n", "SHELL requires at least one argument"),
        (
            "FROM x\nCMD [1]\n",
            "arrays must be comprised of strings only",
        ),
        (
            "FROM x\nHEALTHCHECK NONE x\n",
            "HEALTHCHECK NONE takes no arguments",
        ),
        (
            "FROM x\nHEALTHCHECK CMD\n",
            "Missing command after HEALTHCHECK CMD",
        ),
        (
            "FROM x\nHEALTHCHECK RUN x\n",
            "Unknown type \"RUN\" in HEALTHCHECK",
        ),
        ("FROM x\nHEALTHCHECK --interval=1 CMD x\n", "missing unit"),
        (
            "FROM x\nHEALTHCHECK --interval=10ns CMD x\n",
            "cannot be less than 1ms",
        ),
        (
            "FROM x\nHEALTHCHECK --retries=-1 CMD x\n",
            "--retries cannot be negative",
        ),
        (
            "FROM x\nONBUILD ONBUILD RUN x\n",
            "Dockerfile:2: Chaining ONBUILD",
        ),
        (
            "FROM x\nONBUILD FROM y\n",
            "FROM isn't allowed as an ONBUILD trigger",
        ),
        (
            "FROM x\nONBUILD MAINTAINER y\n",
            "MAINTAINER isn't allowed as an ONBUILD trigger",
        ),
        (
            "FROM x\nONBUILD\n",
            "ONBUILD requires at least one argument",
        ),
        ("FROM x\nONBUILD RUNN y\n", "unknown instruction: RUNN"),
        (
            "FROM x\nMAINTAINER --boo joe@example.com\n",
            "Dockerfile:2: unknown flag: boo",
        ),
        (
            "FROM x\nfoo bar\n",
            "Dockerfile:2: unknown instruction: foo",
        ),
        (
            "FROM x\nCOPY\t\n\t\tquux \\\n      bar\n",
            "Dockerfile:2: COPY requires at least two arguments",
        ),
        (
            "RUN x\nFROM y\n",
            "Dockerfile:1: no build stage in current context",
        ),
        ("ARG A\n", "dockerfile contains no stages to build"),
        (
            "# only a comment\n\n",
            "Dockerfile: file with no instructions",
        ),
        ("", "file with no instructions"),
        ("FROM x\nCOPY --link=maybe a b\n", "expecting boolean value"),
        (
            "FROM x\nCOPY --from=a --from=b a b\n",
            "duplicate flag specified: from",
        ),
    ];
    for (src, want) in cases {
        let got = err(src);
        assert!(
            got.contains(want),
            "input {src:?}\n got: {got}\nwant: {want}"
        );
    }
}

#[test]
fn unknown_instruction_hint() {
    assert_eq!(
        err("FROM x\nRUNN a\n"),
        "Dockerfile:2: unknown instruction: RUNN (did you mean RUN?)"
    );
    assert_eq!(
        err("FROM x\nworkdri /a\n"),
        "Dockerfile:2: unknown instruction: workdri (did you mean WORKDIR?)"
    );
    assert_eq!(
        err("FROM x\nFOOBAR a\n"),
        "Dockerfile:2: unknown instruction: FOOBAR"
    );
}

#[test]
fn error_file_name_can_be_changed() {
    let e = parse("FROM x\nBOGUS\n")
        .unwrap_err()
        .with_file("build/app.Dockerfile");
    assert_eq!(
        e.to_string(),
        "build/app.Dockerfile:2: unknown instruction: BOGUS"
    );
    assert_eq!(e.line, 2);
}

/// Random Dockerfile-like input must produce Ok or Err, never a panic.
#[test]
fn no_panics_on_garbage() {
    const PIECES: &[&str] = &[
        "FROM ",
        "RUN ",
        "COPY ",
        "ADD ",
        "ENV ",
        "ARG ",
        "LABEL ",
        "EXPOSE ",
        "ONBUILD ",
        "HEALTHCHECK ",
        "CMD ",
        "SHELL ",
        "VOLUME ",
        "USER ",
        "WORKDIR ",
        "AS ",
        "x",
        "é",
        "日",
        " ",
        "\t",
        "\n",
        "\r\n",
        "\\",
        "`",
        "\\\n",
        "\"",
        "'",
        "$",
        "${",
        "}",
        ":-",
        ":?",
        "#",
        "<<",
        "<<-",
        "EOF",
        "\nEOF\n",
        "[",
        "]",
        "\"a\",",
        "=",
        "--",
        "--mount=",
        "type=cache,target=/x",
        "--from=",
        "0",
        "-",
        "/",
        "*",
        "!",
        ",",
    ];
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let opts = ResolveOptions::host();
    for _ in 0..3000 {
        let len = (next() % 40) as usize;
        let src: String = (0..len)
            .map(|_| PIECES[(next() % PIECES.len() as u64) as usize])
            .collect();
        if let Ok(df) = parse(&src) {
            let _ = resolve(&df, &opts, &mut |_, _| Ok(vec!["A=1".to_string()]));
        }
        let _ = IgnoreMatcher::from_dockerignore(&src).map(|m| m.is_excluded("a/b/c", false));
        let _ = Lexer::new('\\').process_words(&src, &|_| Some("v w".to_string()));
    }
    let empty = Dockerfile {
        directives: Directives::default(),
        global_args: vec![],
        stages: vec![],
        warnings: vec![],
    };
    assert!(resolve(&empty, &opts, &mut |_, _| Ok(vec![])).is_err());
}

/// Tabs as separators and tab-indented continuation lines keep their inner
/// whitespace exactly like BuildKit's parser (legacy `ENV k v` included).
#[test]
fn tab_separated_instructions() {
    let src = "# comment\n#\n\nFROM\tubuntu:14.04\nLABEL\tmaintainer\tJane Doe <jane@example.com> (@jane)\nRUN\tapt-get install -yq \\\n\tcurl \\\n\tgit \\\n\t--no-install-recommends\nENV\tPLATFORMS\t\\\n\tlinux/386 linux/arm \\\n\tdarwin/amd64\nENV\tGOARM\t5\nRUN\t/bin/echo -e '[default]\\naccess_key=$KEY' > /.s3cfg\nVOLUME\t/var/lib/docker\nENTRYPOINT\t[\"hack/dind\"]\nCOPY\t.\t/go/src/app\n";
    let st = only_stage(src);
    assert_eq!(st.base, "ubuntu:14.04");
    assert_eq!(st.line, 4);
    let ins: Vec<_> = st
        .instructions
        .iter()
        .map(|n| n.instruction.clone())
        .collect();
    let kv = |k: &str, v: &str| {
        vec![KeyValue {
            key: k.into(),
            value: v.into(),
        }]
    };
    assert_eq!(
        ins[0],
        Instruction::Label(kv("maintainer", "Jane Doe <jane@example.com> (@jane)"))
    );
    assert_eq!(
        ins[1],
        one_run_shell("apt-get install -yq \tcurl \tgit \t--no-install-recommends")
    );
    assert_eq!(
        ins[2],
        Instruction::Env(kv("PLATFORMS", "linux/386 linux/arm \tdarwin/amd64"))
    );
    assert_eq!(ins[3], Instruction::Env(kv("GOARM", "5")));
    assert_eq!(
        ins[4],
        one_run_shell("/bin/echo -e '[default]\\naccess_key=$KEY' > /.s3cfg")
    );
    assert_eq!(ins[5], Instruction::Volume(s(&["/var/lib/docker"])));
    assert_eq!(
        ins[6],
        Instruction::Entrypoint(CommandForm::Exec(s(&["hack/dind"])))
    );
    let Instruction::Copy(c) = &ins[7] else {
        panic!()
    };
    assert_eq!(
        (c.files.sources.clone(), c.files.dest.as_str()),
        (vec![Source::Path(".".into())], "/go/src/app")
    );
    assert_eq!(
        st.instructions.iter().map(|n| n.line).collect::<Vec<_>>(),
        vec![5, 6, 10, 13, 14, 15, 16, 17]
    );
}

#[test]
fn deprecation_warnings() {
    let df = parse(
        "FROM x\nMAINTAINER me\nENV A 1\nENV B=2\nlabel version 1.0\nLABEL v=1\nRUN a \\\n\n  b\nRUN c\n",
    )
    .unwrap();
    let got: Vec<(usize, &str)> = df
        .warnings
        .iter()
        .map(|w| (w.line, w.message.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                2,
                "MAINTAINER instruction is deprecated in favor of using label"
            ),
            (
                3,
                "\"ENV key=value\" should be used instead of legacy \"ENV key value\" format"
            ),
            (
                5,
                "\"LABEL key=value\" should be used instead of legacy \"LABEL key value\" format"
            ),
            (7, "Empty continuation line found in: RUN a   b"),
        ]
    );
    assert!(parse("FROM x\nRUN ok\n").unwrap().warnings.is_empty());
}
