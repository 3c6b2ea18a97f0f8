//! Tests of `resolve`: ARG/ENV scoping, expansion per instruction, the stage
//! graph and target pruning.

use super::*;

fn opts(args: &[(&str, &str)], target: Option<&str>) -> ResolveOptions {
    ResolveOptions {
        build_args: args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        target: target.map(str::to_string),
        target_platform: Platform::parse("linux/arm64").unwrap(),
        build_platform: Platform::parse("linux/amd64").unwrap(),
    }
}

fn plan_with(src: &str, o: &ResolveOptions) -> Result<BuildPlan, String> {
    let df = parse(src).map_err(|e| e.to_string())?;
    resolve(&df, o, &mut |_, _| Ok(Vec::new())).map_err(|e| e.to_string())
}

fn plan(src: &str, args: &[(&str, &str)]) -> BuildPlan {
    plan_with(src, &opts(args, None)).unwrap_or_else(|e| panic!("{e}"))
}

/// Instructions of the target stage.
fn target_instructions(p: &BuildPlan) -> Vec<Instruction> {
    p.stage(p.target)
        .unwrap()
        .instructions
        .iter()
        .map(|n| n.instruction.clone())
        .collect()
}

fn image(p: &BuildPlan, index: usize) -> Base {
    p.stage(index).unwrap().base.clone()
}

#[test]
fn global_args_in_from() {
    let src = "ARG  CODE_VERSION=latest\nFROM base:${CODE_VERSION}\nCMD  /code/run-app\nFROM extras:${CODE_VERSION}\nCMD  /code/run-extras\n";
    let p = plan_with(src, &opts(&[], Some(""))).err();
    assert!(p.unwrap().contains("target stage \"\" could not be found"));
    let df = parse(src).unwrap();
    let p = resolve(&df, &opts(&[], None), &mut |_, _| Ok(Vec::new())).unwrap();
    // Only the last stage is needed.
    assert_eq!(p.stages.len(), 1);
    assert_eq!(image(&p, 1), Base::Image("extras:latest".into()));
    let p = resolve(&df, &opts(&[("CODE_VERSION", "1.2")], None), &mut |_, _| {
        Ok(Vec::new())
    })
    .unwrap();
    assert_eq!(image(&p, 1), Base::Image("extras:1.2".into()));
    assert!(p.unused_build_args.is_empty());
}

#[test]
fn global_arg_needs_redeclaration_inside_stage() {
    let src = "ARG VERSION=latest\nFROM busybox:$VERSION\nWORKDIR /a$VERSION\nARG VERSION\nWORKDIR /b$VERSION\nRUN echo $VERSION\n";
    let p = plan(src, &[]);
    let ins = target_instructions(&p);
    assert_eq!(ins[0], Instruction::Workdir("/a".into()));
    assert_eq!(ins[2], Instruction::Workdir("/blatest".into()));
    let run = &p.stage(0).unwrap().instructions[3];
    assert_eq!(
        run.build_args,
        vec![("VERSION".to_string(), "latest".to_string())]
    );
    // RUN is not expanded by the frontend.
    assert!(
        matches!(&run.instruction, Instruction::Run(r) if r.command == CommandForm::Shell("echo $VERSION".into()))
    );
    // A build arg overrides the global default in both places.
    let p = plan(src, &[("VERSION", "1.36")]);
    assert_eq!(image(&p, 0), Base::Image("busybox:1.36".into()));
    assert_eq!(
        target_instructions(&p)[2],
        Instruction::Workdir("/b1.36".into())
    );
}

#[test]
fn arg_default_and_order() {
    // Dockerfile reference: a variable is only defined from its ARG line on.
    let src = "FROM busybox\nUSER ${username:-some_user}\nARG username\nUSER $username\n";
    let p = plan(src, &[("username", "what_user")]);
    let ins = target_instructions(&p);
    assert_eq!(ins[0], Instruction::User("some_user".into()));
    assert_eq!(ins[2], Instruction::User("what_user".into()));
    // Defaults are expanded with what is in scope.
    let p = plan("FROM x\nARG A=1 B=${A}2\nWORKDIR /$B\n", &[]);
    assert_eq!(
        target_instructions(&p)[1],
        Instruction::Workdir("/12".into())
    );
    // Declared without value and no build arg: unset.
    let p = plan("FROM x\nARG A\nWORKDIR /${A-unset}\n", &[]);
    assert_eq!(
        target_instructions(&p)[1],
        Instruction::Workdir("/unset".into())
    );
}

#[test]
fn env_overrides_arg() {
    let src = "FROM ubuntu\nARG CONT_IMG_VER\nENV CONT_IMG_VER=v1.0.0\nWORKDIR /$CONT_IMG_VER\n";
    let p = plan(src, &[("CONT_IMG_VER", "v2.0.1")]);
    assert_eq!(
        target_instructions(&p)[2],
        Instruction::Workdir("/v1.0.0".into())
    );
    let src = "FROM ubuntu\nARG CONT_IMG_VER\nENV CONT_IMG_VER=${CONT_IMG_VER:-v1.0.0}\nWORKDIR /$CONT_IMG_VER\n";
    assert_eq!(
        target_instructions(&plan(src, &[("CONT_IMG_VER", "v2.0.1")]))[2],
        Instruction::Workdir("/v2.0.1".into())
    );
    assert_eq!(
        target_instructions(&plan(src, &[]))[2],
        Instruction::Workdir("/v1.0.0".into())
    );
}

/// ARG vs ENV of the same name: BuildKit's dispatchArg and dispatchEnv both
/// write the state env, so the later declaration wins in word expansion; an
/// ARG without a value changes nothing. Observed with Docker 20.10's
/// BuildKit: `ENV A=env1`, `ARG A=arg1`, `ENV W=$A` gives `W=arg1`.
/// (instructions, build args, expected expansion of `$A`).
type ArgEnvCase = (
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
);

#[test]
fn later_of_arg_and_env_wins() {
    let cases: &[ArgEnvCase] = &[
        ("ENV A=env1\nARG A=arg1\n", &[], "/arg1"),
        ("ARG A=arg1\nENV A=env1\n", &[], "/env1"),
        ("ENV A=env1\nARG A\n", &[], "/env1"),
        ("ARG A\nENV A=env1\nARG A\n", &[], "/env1"),
        ("ENV A=env1\nARG A\n", &[("A", "cli")], "/cli"),
        ("ARG A\nENV A=env1\n", &[("A", "cli")], "/env1"),
        ("ARG A=arg1\n", &[], "/arg1"),
    ];
    for (body, args, want) in cases {
        let src = format!("FROM x\n{body}WORKDIR /$A\n");
        let p = plan(&src, args);
        let ins = target_instructions(&p);
        assert_eq!(
            ins.last(),
            Some(&Instruction::Workdir(want.to_string())),
            "{body:?} {args:?}"
        );
    }
    // The image config keeps only ENV values.
    let p = plan("FROM x\nENV A=env1\nARG A=arg1\nENV W=$A\n", &[]);
    let env = &p.stage(0).unwrap().env;
    assert!(env.contains(&("A".to_string(), "env1".to_string())));
    assert!(env.contains(&("W".to_string(), "arg1".to_string())));
}

/// `ENV C=trailing\\` ends at the escaped backslash (BuildKit's config has
/// `C=trailing\`) and the next line is its own instruction.
#[test]
fn escaped_backslash_at_line_end() {
    let p = plan("FROM x\nENV C=trailing\\\\\nLABEL l=v\n", &[]);
    let env = &p.stage(0).unwrap().env;
    assert!(env.contains(&("C".to_string(), "trailing\\".to_string())));
    assert_eq!(target_instructions(&p).len(), 2);
}

#[test]
fn env_uses_values_from_before_the_instruction() {
    let p = plan(
        "FROM x\nENV abc=hello\nENV abc=bye def=$abc\nENV ghi=$abc\n",
        &[],
    );
    let env = &p.stage(0).unwrap().env;
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("def"), Some("hello"));
    assert_eq!(get("ghi"), Some("bye"));
    assert_eq!(get("abc"), Some("bye"));
    // Image-config order is kept when a key is replaced.
    assert_eq!(
        env.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        vec!["abc", "def", "ghi"]
    );
}

#[test]
fn reference_env_replacement_example() {
    let p = plan(
        "FROM busybox\nENV FOO=/bar\nWORKDIR ${FOO}\nADD . $FOO\nCOPY \\$FOO /quux\n",
        &[],
    );
    let ins = target_instructions(&p);
    assert_eq!(ins[1], Instruction::Workdir("/bar".into()));
    let Instruction::Add(a) = &ins[2] else {
        panic!()
    };
    assert_eq!(a.files.dest, "/bar");
    let Instruction::Copy(c) = &ins[3] else {
        panic!()
    };
    assert_eq!(c.files.sources, vec![Source::Path("$FOO".into())]);
}

#[test]
fn quotes_removed_in_env_and_label() {
    let p = plan(
        "FROM x\nENV A=\"x y\" B='$lit' C=a\\ b D=\"$A!\"\nLABEL \"com.example.vendor\"=\"ACME Inc\" v=$A\nENV LEGACY some value\n",
        &[],
    );
    let ins = target_instructions(&p);
    let kv = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: v.into(),
    };
    assert_eq!(
        ins[0],
        Instruction::Env(vec![
            kv("A", "x y"),
            kv("B", "$lit"),
            kv("C", "a b"),
            kv("D", "!")
        ])
    );
    assert_eq!(
        ins[1],
        Instruction::Label(vec![kv("com.example.vendor", "ACME Inc"), kv("v", "x y")])
    );
    assert_eq!(ins[2], Instruction::Env(vec![kv("LEGACY", "some value")]));
}

#[test]
fn platform_args() {
    let src = "FROM --platform=$BUILDPLATFORM golang:1.22 AS build\nARG TARGETOS TARGETARCH\nRUN --mount=type=cache,target=/cache/$TARGETARCH GOOS=$TARGETOS go build\nWORKDIR /$TARGETPLATFORM\nFROM scratch\nCOPY --from=build /out /\n";
    let p = plan(src, &[]);
    let build = p.stage(0).unwrap();
    assert_eq!(build.platform.as_deref(), Some("linux/amd64"));
    let Instruction::Run(r) = &build.instructions[1].instruction else {
        panic!()
    };
    assert_eq!(r.mounts[0].target.as_deref(), Some("/cache/arm64"));
    assert_eq!(r.mounts[0].id.as_deref(), Some("/cache/arm64"));
    assert_eq!(
        build.instructions[1].build_args,
        vec![
            ("TARGETARCH".to_string(), "arm64".to_string()),
            ("TARGETOS".to_string(), "linux".to_string())
        ]
    );
    // Not declared in the stage → not visible.
    assert_eq!(
        build.instructions[2].instruction,
        Instruction::Workdir("/".into())
    );
    assert_eq!(image(&p, 1), Base::Scratch);
}

#[test]
fn graph_pruning_and_order() {
    let src = "\
FROM alpine AS base
FROM base AS a
RUN x
FROM base AS b
COPY --from=a /x /x
FROM busybox AS unused
RUN y
FROM scratch
COPY --from=b /y /y
COPY --from=0 /z /z
RUN --mount=type=bind,from=golang:1.22,target=/go true
";
    let p = plan(src, &[]);
    assert_eq!(p.target, 4);
    assert_eq!(
        p.stages.iter().map(|s| s.index).collect::<Vec<_>>(),
        vec![0, 1, 2, 4]
    );
    assert_eq!(image(&p, 1), Base::Stage(0));
    assert_eq!(p.stage(1).unwrap().deps, vec![0]);
    assert_eq!(p.stage(2).unwrap().deps, vec![0, 1]);
    let fin = p.stage(4).unwrap();
    assert_eq!(fin.deps, vec![0, 2]);
    assert_eq!(fin.images, vec!["golang:1.22".to_string()]);

    let p = plan_with(src, &opts(&[], Some("A"))).unwrap();
    assert_eq!(
        p.stages.iter().map(|s| s.index).collect::<Vec<_>>(),
        vec![0, 1]
    );
    assert_eq!(p.target, 1);
}

#[test]
fn forward_references_are_ordered_and_cycles_refused() {
    let p = plan(
        "FROM alpine AS first\nCOPY --from=later /a /a\nFROM alpine AS later\nRUN x\n",
        &[],
    );
    // Target is the last stage; `first` is not needed.
    assert_eq!(p.stages.len(), 1);
    let p = plan_with(
        "FROM alpine AS first\nCOPY --from=later /a /a\nFROM alpine AS later\nRUN x\n",
        &opts(&[], Some("first")),
    )
    .unwrap();
    assert_eq!(
        p.stages.iter().map(|s| s.index).collect::<Vec<_>>(),
        vec![1, 0]
    );

    let e = plan_with(
        "FROM a AS x\nCOPY --from=y /a /a\nFROM a AS y\nCOPY --from=x /b /b\n",
        &opts(&[], None),
    )
    .unwrap_err();
    assert!(e.contains("circular dependency detected on stage"), "{e}");
    let e = plan_with("FROM a AS x\nCOPY --from=x /a /a\n", &opts(&[], None)).unwrap_err();
    assert_eq!(e, "Dockerfile:2: circular dependency detected on stage: x");
    let e = plan_with("FROM a\nCOPY --from=5 /a /a\n", &opts(&[], None)).unwrap_err();
    assert_eq!(e, "Dockerfile:2: invalid stage index 5");
}

#[test]
fn from_values_are_expanded() {
    let p = plan("FROM a AS builder\nFROM b\nARG SRC=builder\nCOPY --from=$SRC /x /x\nARG IMG=nginx:1\nCOPY --from=${IMG} /etc/nginx /etc/nginx\n", &[]);
    let fin = p.stage(1).unwrap();
    assert_eq!(fin.deps, vec![0]);
    assert_eq!(fin.images, vec!["nginx:1".to_string()]);
}

#[test]
fn base_image_env_is_used_and_only_for_needed_stages() {
    let src = "FROM golang:1.22 AS build\nWORKDIR $GOPATH/src\nFROM build AS child\nWORKDIR $GOPATH/bin\nFROM debian AS other\nRUN x\nFROM child\n";
    let df = parse(src).unwrap();
    let mut calls = Vec::new();
    let p = resolve(&df, &opts(&[], None), &mut |r, plat| {
        calls.push((r.to_string(), plat.map(str::to_string)));
        Ok(vec!["GOPATH=/go".to_string(), "PATH=/usr/bin".to_string()])
    })
    .unwrap();
    assert_eq!(calls, vec![("golang:1.22".to_string(), None)]);
    assert_eq!(
        p.stage(0).unwrap().instructions[0].instruction,
        Instruction::Workdir("/go/src".into())
    );
    assert_eq!(
        p.stage(1).unwrap().instructions[0].instruction,
        Instruction::Workdir("/go/bin".into())
    );
    assert_eq!(p.stage(3).unwrap().env.len(), 2);
    assert!(p.stage(2).is_none());

    let e = resolve(&df, &opts(&[], None), &mut |_, _| {
        Err("registry unreachable".into())
    })
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "Dockerfile:1: failed to get the config of golang:1.22: registry unreachable"
    );
}

#[test]
fn expansion_errors_only_matter_in_needed_stages() {
    let src = "FROM a AS broken\nWORKDIR ${X:?X is required}\nFROM b\nWORKDIR /ok\n";
    assert!(plan_with(src, &opts(&[], None)).is_ok());
    let e = plan_with(src, &opts(&[], Some("broken"))).unwrap_err();
    assert_eq!(
        e,
        "Dockerfile:2: failed to process \"${X:?X is required}\": X: X is required"
    );
    let e = plan_with("ARG E\nFROM $E\n", &opts(&[], None)).unwrap_err();
    assert_eq!(e, "Dockerfile:2: base name ($E) should not be blank");
}

#[test]
fn expose_volume_user_stopsignal() {
    let p = plan(
        "FROM x\nENV P=8080\nARG PORTS=\"80 443\"\nEXPOSE $P 53/UDP 7000-7002/tcp $PORTS\nVOLUME [\"/data/$P\"] \nUSER ${P}:staff\nSTOPSIGNAL SIG$P\n",
        &[],
    );
    let ins = target_instructions(&p);
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        ins[2],
        Instruction::Expose(s(&[
            "8080/tcp", "53/udp", "7000/tcp", "7001/tcp", "7002/tcp", "80/tcp", "443/tcp"
        ]))
    );
    assert_eq!(ins[3], Instruction::Volume(s(&["/data/8080"])));
    assert_eq!(ins[4], Instruction::User("8080:staff".into()));
    assert_eq!(ins[5], Instruction::StopSignal("SIG8080".into()));
    for (bad, want) in [
        ("EXPOSE 80/icmp", "invalid proto: icmp"),
        ("EXPOSE http", "invalid containerPort: http"),
        ("EXPOSE 90-80", "invalid range"),
        ("EXPOSE 70000", "invalid containerPort"),
        (
            "ARG V\nVOLUME $V",
            "VOLUME specified can not be an empty string",
        ),
        ("ARG M=999\nCOPY --chmod=$M a b", "invalid chmod value"),
    ] {
        let e = plan_with(&format!("FROM x\n{bad}\n"), &opts(&[], None)).unwrap_err();
        assert!(e.contains(want), "{bad}: {e}");
        assert!(e.starts_with("Dockerfile:"), "{e}");
    }
}

#[test]
fn copy_heredoc_and_flags_expansion() {
    let src = "FROM x\nARG NAME=world U=app\nCOPY --chown=$U:$U --chmod=0755 --exclude=*.$NAME <<EOF <<'RAW' /dst/$NAME\nhello \"$NAME\" \\$HOME '$U'\nEOF\n$NAME\nRAW\nADD --checksum=sha256:$NAME https://example.com/$NAME.tgz /\n";
    let p = plan(src, &[]);
    let ins = target_instructions(&p);
    let Instruction::Copy(c) = &ins[1] else {
        panic!()
    };
    assert_eq!(c.files.chown.as_deref(), Some("app:app"));
    assert_eq!(c.files.excludes, vec!["*.world".to_string()]);
    assert_eq!(c.files.dest, "/dst/world");
    let contents: Vec<_> = c
        .files
        .sources
        .iter()
        .map(|s| match s {
            Source::Heredoc(h) => h.content.clone(),
            Source::Path(p) => p.clone(),
        })
        .collect();
    assert_eq!(
        contents,
        vec![
            "hello \"world\" $HOME 'app'\n".to_string(),
            "$NAME\n".to_string()
        ]
    );
    let Instruction::Add(a) = &ins[2] else {
        panic!()
    };
    assert_eq!(a.checksum.as_deref(), Some("sha256:world"));
    assert_eq!(
        a.files.sources,
        vec![Source::Path("https://example.com/world.tgz".into())]
    );
}

#[test]
fn build_args_bookkeeping() {
    let p = plan(
        "ARG G\nFROM x\nARG VERSION\nRUN true\n",
        &[
            ("VERSION", "1"),
            ("FOO", "x"),
            ("HTTP_PROXY", "http://p:3128"),
            ("G", "g"),
        ],
    );
    assert_eq!(p.unused_build_args, vec!["FOO".to_string()]);
    let run = &target_instructions_nodes(&p)[1];
    assert_eq!(
        run.build_args,
        vec![
            ("HTTP_PROXY".to_string(), "http://p:3128".to_string()),
            ("VERSION".to_string(), "1".to_string())
        ]
    );
}

fn target_instructions_nodes(p: &BuildPlan) -> Vec<ResolvedNode> {
    p.stage(p.target).unwrap().instructions.clone()
}

#[test]
fn backtick_escape_in_words() {
    let p = plan(
        "# escape=`\nFROM x\nENV P=C:\\foo\nWORKDIR $P\\bar\nWORKDIR `$P\n",
        &[],
    );
    let ins = target_instructions(&p);
    assert_eq!(ins[1], Instruction::Workdir("C:\\foo\\bar".into()));
    assert_eq!(ins[2], Instruction::Workdir("$P".into()));
}

#[test]
fn onbuild_and_commands_untouched() {
    let p = plan(
        "FROM x\nENV A=1\nONBUILD RUN echo $A\nCMD echo $A\nHEALTHCHECK CMD test $A\n",
        &[],
    );
    let ins = target_instructions(&p);
    let Instruction::OnBuild(o) = &ins[1] else {
        panic!()
    };
    assert_eq!(o.expression, "RUN echo $A");
    assert_eq!(
        ins[2],
        Instruction::Cmd(CommandForm::Shell("echo $A".into()))
    );
    let Instruction::Healthcheck(Healthcheck::Check(h)) = &ins[3] else {
        panic!()
    };
    assert_eq!(
        h.test(),
        vec!["CMD-SHELL".to_string(), "test $A".to_string()]
    );
}

#[test]
fn onbuild_triggers_of_base_stage_run_first() {
    let src = "FROM alpine AS dep\nFROM alpine AS parent\nONBUILD COPY --from=dep /x /x\nONBUILD RUN echo hi\nFROM parent\nRUN final\n";
    let p = plan(src, &[]);
    assert_eq!(
        p.stages.iter().map(|s| s.index).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    let parent = p.stage(1).unwrap();
    assert_eq!(
        parent.onbuild,
        vec![
            "COPY --from=dep /x /x".to_string(),
            "RUN echo hi".to_string()
        ]
    );
    let child = p.stage(2).unwrap();
    assert_eq!(
        child.deps,
        vec![0, 1],
        "the trigger's COPY --from adds a dependency"
    );
    assert!(child.onbuild.is_empty(), "triggers are consumed");
    let flags: Vec<_> = child
        .instructions
        .iter()
        .map(|n| (n.line, n.original.as_str(), n.trigger))
        .collect();
    assert_eq!(
        flags,
        vec![
            (5, "COPY --from=dep /x /x", true),
            (5, "RUN echo hi", true),
            (6, "RUN final", false)
        ]
    );
}

#[test]
fn onbuild_triggers_of_base_image() {
    let df = parse("FROM onbuild-image\nARG X=1\nRUN y\n").unwrap();
    let p = resolve_with_base_images(&df, &opts(&[], None), &mut |_, _| {
        Ok(BaseImage {
            env: vec!["APP=/app".to_string()],
            onbuild: vec!["ADD . $APP/src".to_string(), "RUN make".to_string()],
        })
    })
    .unwrap();
    let st = p.stage(0).unwrap();
    let Instruction::Add(a) = &st.instructions[0].instruction else {
        panic!()
    };
    assert_eq!(a.files.dest, "/app/src");
    assert!(
        st.instructions[0].trigger && st.instructions[1].trigger && !st.instructions[2].trigger
    );
    assert_eq!(st.instructions.len(), 4);

    let e = resolve_with_base_images(&df, &opts(&[], None), &mut |_, _| {
        Ok(BaseImage {
            env: vec![],
            onbuild: vec!["FROM evil".to_string()],
        })
    })
    .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("Dockerfile:1: invalid ONBUILD trigger \"FROM evil\""),
        "{e}"
    );
}

#[test]
fn parse_trigger_helper() {
    assert!(matches!(
        parse_onbuild_trigger("RUN make"),
        Ok(Instruction::Run(_))
    ));
    assert!(parse_onbuild_trigger("ONBUILD RUN x").is_err());
    assert!(parse_onbuild_trigger("MAINTAINER me").is_err());
    assert!(parse_onbuild_trigger("").is_err());
}

#[test]
fn redeclared_automatic_and_valueless_global_args() {
    // `ARG TARGETPLATFORM` before FROM keeps the automatic value.
    let p = plan(
        "ARG TARGETPLATFORM\nFROM --platform=$TARGETPLATFORM alpine\n",
        &[],
    );
    assert_eq!(p.stage(0).unwrap().platform.as_deref(), Some("linux/arm64"));
    // A global ARG without value stays unset inside the stage.
    let p = plan("ARG X\nFROM alpine\nARG X\nWORKDIR /${X-unset}\n", &[]);
    assert_eq!(
        target_instructions(&p)[1],
        Instruction::Workdir("/unset".into())
    );
    let p = plan(
        "ARG X\nFROM alpine\nARG X\nWORKDIR /${X-unset}\n",
        &[("X", "given")],
    );
    assert_eq!(
        target_instructions(&p)[1],
        Instruction::Workdir("/given".into())
    );
}

/// Stage names match exactly: with `AS middle`, `FROM MIDDLE` is an image
/// reference, and an invalid one. Docker 20.10's BuildKit: `failed to parse
/// stage name "MIDDLE": invalid reference format: repository name must be
/// lowercase`.
#[test]
fn stage_names_are_case_sensitive_references_validated() {
    let err = plan_with("FROM scratch AS middle\nFROM MIDDLE\n", &opts(&[], None)).unwrap_err();
    assert!(
        err.contains(
            "failed to parse stage name \"MIDDLE\": invalid reference format: repository name must be lowercase"
        ),
        "{err}"
    );
    // `--from` is not case-sensitive: BuildKit copies from stage `middle`.
    let p = plan(
        "FROM scratch AS middle\nFROM scratch\nCOPY --from=MIDDLE /a /b\n",
        &[],
    );
    assert_eq!(p.stage(1).unwrap().deps, vec![0]);
    // `AS Middle` declares "middle"; the lowercase reference finds it.
    let p = plan("FROM scratch AS Middle\nFROM middle\n", &[]);
    assert_eq!(image(&p, 1), Base::Stage(0));
    assert!(plan_with("FROM a//b\n", &opts(&[], None)).is_err());
    // Tags may have capitals.
    let p = plan("FROM alpine:Latest\n", &[]);
    assert_eq!(image(&p, 0), Base::Image("alpine:Latest".into()));
}
