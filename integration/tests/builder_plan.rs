//! `berth-build build --print` (issue 12, "one interpretation"): the plan
//! shows each step's cache key, what the key hashed and whether the store
//! has it, so a user sees what will run and why a step's key changed. The
//! keys printed are the keys the next build stores: every cache entry is
//! `<store>/cache/<key hex>.json`, and the entries a build adds are exactly
//! the keys the plan printed as not cached.
//!
//! Run with the real berth-build, embedded and through berth-buildd.
use berth_integration::builder::{tar_dir, text, BuildEnv, Buildd, Busybox};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;

const DOCKERFILE: &str = "FROM scratch\n\
ADD busybox.tar /\n\
ENV GREETING=hi\n\
COPY file.txt /file.txt\n\
RUN cat /file.txt > /out\n\
ARG LATE=one\n\
RUN echo $LATE > /late\n\
CMD [\"cat\", \"/out\"]\n";

/// A store, a context and how to call berth-build on them.
struct Env {
    /// A berth-buildd serving the store, else the embedded engine; killed
    /// before the store is cleaned up (fields drop in order).
    buildd: Option<Buildd>,
    env: BuildEnv,
}

impl Env {
    fn new(name: &str) -> Env {
        Env {
            buildd: None,
            env: BuildEnv::new(name),
        }
    }

    fn store(&self) -> PathBuf {
        self.env.store()
    }

    fn cmd(&self, args: &[&str]) -> Output {
        match &self.buildd {
            Some(d) => d.out(args),
            None => self.env.out(args),
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.cmd(args);
        assert!(
            o.status.success(),
            "berth-build {args:?} failed:\n{}",
            text(&o)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// A context `name` with busybox.tar, file.txt and `dockerfile`.
    fn context(&self, name: &str, dockerfile: &str) -> PathBuf {
        let ctx = self.env.path().join(name);
        std::fs::create_dir_all(&ctx).unwrap();
        busybox_tar(&ctx.join("busybox.tar"), &self.env.path().join("rootfs"));
        std::fs::write(ctx.join("file.txt"), "one\n").unwrap();
        std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
        ctx
    }

    fn plan(&self, ctx: &Path, extra: &[&str]) -> Value {
        let mut args = vec!["build", "--print"];
        args.extend_from_slice(extra);
        args.push(ctx.to_str().unwrap());
        serde_json::from_str(&self.ok(&args)).unwrap()
    }

    fn build(&self, ctx: &Path, extra: &[&str]) {
        let mut args = vec!["build", "--progress", "plain"];
        args.extend_from_slice(extra);
        args.push(ctx.to_str().unwrap());
        self.ok(&args);
    }

    /// The keys of the store's cache entries.
    fn cache_keys(&self) -> BTreeSet<String> {
        std::fs::read_dir(self.store().join("cache"))
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().to_string_lossy().into_owned();
                name.strip_suffix(".json").map(|h| format!("sha256:{h}"))
            })
            .collect()
    }
}

/// A busybox rootfs tar (sh, cat, echo) made from the host's /bin/busybox,
/// with mtimes zeroed: every context's tar is the same bytes.
fn busybox_tar(dest: &Path, scratch: &Path) {
    let rootfs = Busybox {
        group: None,
        tar_flags: &["--numeric-owner", "--mtime=@0"],
        ..Busybox::new(&["sh", "echo", "cat", "true"])
    };
    if !scratch.exists() {
        rootfs.populate(scratch);
    }
    tar_dir(scratch, dest, rootfs.tar_flags);
}

/// A planned step as the test looks at it.
#[derive(Debug, Clone)]
struct Step {
    original: String,
    kind: String,
    key: Option<String>,
    cached: Option<bool>,
    inputs: Value,
    pending: Option<String>,
    miss_reason: Option<String>,
}

/// Every step of stage `stage` of `plan`, FROM first.
fn steps(plan: &Value, stage: usize) -> Vec<Step> {
    let s = &plan["stages"][stage];
    let mut out = vec![step(&s["from_step"], s["original"].as_str().unwrap())];
    for i in s["instructions"].as_array().unwrap() {
        out.push(step(i, i["original"].as_str().unwrap()));
    }
    out
}

fn step(v: &Value, original: &str) -> Step {
    Step {
        original: original.to_string(),
        kind: v["kind"].as_str().unwrap().to_string(),
        key: v["cache_key"].as_str().map(String::from),
        cached: v["cached"].as_bool(),
        inputs: v["key_inputs"].clone(),
        pending: v["pending"].as_str().map(String::from),
        miss_reason: v["miss_reason"].as_str().map(String::from),
    }
}

fn by_line<'a>(steps: &'a [Step], prefix: &str) -> &'a Step {
    steps
        .iter()
        .find(|s| s.original.starts_with(prefix))
        .unwrap_or_else(|| panic!("no step {prefix:?} in {steps:#?}"))
}

/// Layer steps' keys.
fn layer_keys(steps: &[Step]) -> BTreeSet<String> {
    steps
        .iter()
        .filter(|s| s.kind == "layer")
        .map(|s| s.key.clone().expect("a layer step without key"))
        .collect()
}

/// `inputs` without `names`: what else a key hashed.
fn without(inputs: &Value, names: &[&str]) -> Value {
    let mut v = inputs.clone();
    for n in names {
        v.as_object_mut().unwrap().remove(*n);
    }
    v
}

/// The user story: build, plan (all cached), change the copied file (the
/// COPY's content input changes, it and later steps are not cached),
/// change a build arg a RUN uses (only that RUN), each time checking that
/// the keys printed are those the next build stores.
fn story(env: &Env) {
    let ctx = env.context("ctx", DOCKERFILE);
    env.build(&ctx, &["-t", "plan/a"]);
    let built = env.cache_keys();

    let p0 = steps(&env.plan(&ctx, &[]), 0);
    assert_eq!(p0.len(), 8, "{p0:#?}");
    assert_eq!(p0[0].kind, "base");
    assert_eq!(p0[0].cached, Some(true));
    for s in &p0[1..] {
        match s.original.split_whitespace().next().unwrap() {
            "ADD" | "COPY" | "RUN" => {
                assert_eq!(s.kind, "layer", "{s:?}");
                assert_eq!(s.cached, Some(true), "{s:?}");
                assert!(s.key.is_some() && s.pending.is_none(), "{s:?}");
            }
            _ => {
                assert_eq!(s.kind, "metadata", "{s:?}");
                assert_eq!((&s.key, s.cached), (&None, None), "{s:?}");
            }
        }
    }
    // The keys printed are exactly the entries the build stored.
    assert_eq!(layer_keys(&p0), built);
    // Each key chains on its parent's: ADD on FROM scratch, COPY on ADD.
    assert_eq!(
        by_line(&p0, "ADD").inputs["parent"].as_str(),
        p0[0].key.as_deref()
    );
    assert_eq!(
        by_line(&p0, "COPY").inputs["parent"].as_str(),
        by_line(&p0, "ADD").key.as_deref()
    );
    assert_eq!(by_line(&p0, "RUN cat").inputs["env"][1], "GREETING=hi");

    // The copied file changes.
    std::fs::write(ctx.join("file.txt"), "two\n").unwrap();
    let p1 = steps(&env.plan(&ctx, &[]), 0);
    for line in ["FROM", "ADD"] {
        let (before, now) = (by_line(&p0, line), by_line(&p1, line));
        assert_eq!((&now.key, now.cached), (&before.key, Some(true)), "{now:?}");
    }
    let (copy0, copy1) = (by_line(&p0, "COPY"), by_line(&p1, "COPY"));
    assert_ne!(copy1.key, copy0.key);
    assert_eq!(copy1.cached, Some(false));
    // What changed is the content digest of the selected source, only.
    let src = |s: &Step| s.inputs["sources"][0]["content_digest"].clone();
    assert_ne!(src(copy1), src(copy0));
    assert_eq!(copy1.inputs["sources"][0]["path"], "file.txt");
    assert_eq!(
        without(&copy1.inputs, &["sources"]),
        without(&copy0.inputs, &["sources"])
    );
    if env.buildd.is_none() {
        // (berth-buildd gets a new context directory per request, so it
        // has no earlier run of "this" step to compare with.)
        let why = copy1.miss_reason.as_deref().unwrap_or_default();
        assert!(why.contains("content of file.txt changed"), "{why}");
    }
    for line in ["RUN cat", "RUN echo"] {
        let (before, now) = (by_line(&p0, line), by_line(&p1, line));
        assert_ne!(now.key, before.key, "{line}");
        assert_eq!(now.cached, Some(false), "{line}");
        // Their own inputs are the same; only the parent key moved.
        assert_eq!(
            without(&now.inputs, &["parent"]),
            without(&before.inputs, &["parent"])
        );
    }
    assert_eq!(
        by_line(&p1, "RUN cat").inputs["parent"].as_str(),
        copy1.key.as_deref()
    );
    // The next build stores exactly the keys printed as not cached.
    env.build(&ctx, &["-t", "plan/b"]);
    let after = env.cache_keys();
    let uncached: BTreeSet<String> = p1
        .iter()
        .filter(|s| s.cached == Some(false))
        .map(|s| s.key.clone().unwrap())
        .collect();
    assert_eq!(uncached.len(), 3);
    assert_eq!(
        after.difference(&built).cloned().collect::<BTreeSet<_>>(),
        uncached
    );
    let p2 = steps(&env.plan(&ctx, &[]), 0);
    for (now, planned) in p2.iter().zip(&p1) {
        assert_eq!(now.key, planned.key);
        if now.kind == "layer" {
            assert_eq!(now.cached, Some(true), "{now:?}");
        }
    }

    // A build arg only the last RUN uses: only that RUN's key changes.
    let p3 = steps(&env.plan(&ctx, &["--build-arg", "LATE=two"]), 0);
    for (now, before) in p3.iter().zip(&p2) {
        if now.original.starts_with("RUN echo") {
            assert_ne!(now.key, before.key);
            assert_eq!(now.cached, Some(false));
            assert!(before.inputs["env"]
                .as_array()
                .unwrap()
                .contains(&"LATE=one".into()));
            assert!(now.inputs["env"]
                .as_array()
                .unwrap()
                .contains(&"LATE=two".into()));
            assert_eq!(
                without(&now.inputs, &["env"]),
                without(&before.inputs, &["env"])
            );
        } else {
            assert_eq!((&now.key, now.cached), (&before.key, before.cached));
        }
    }
    env.build(&ctx, &["--build-arg", "LATE=two"]);
    let last = env.cache_keys();
    assert_eq!(
        last.difference(&after).cloned().collect::<Vec<_>>(),
        vec![by_line(&p3, "RUN echo").key.clone().unwrap()]
    );
}

#[test]
fn print_shows_the_keys_the_build_uses() {
    story(&Env::new("bb-plan"));
}

/// The same story through berth-buildd: the daemon plans against its store.
#[test]
fn print_shows_the_keys_over_grpc() {
    let mut env = Env::new("bb-plan-grpc");
    let d = env.env.buildd();
    env.buildd = Some(d);
    story(&env);
}

/// Keys that only exist once the build runs are null with the reason, and
/// what depends on them too; once built, the plan has every key, and a
/// `COPY --from` of a built stage is keyed on the files it copies.
#[test]
fn print_says_which_keys_wait_for_the_build() {
    let env = Env::new("bb-plan-pending");
    let ctx = env.context(
        "ctx",
        "FROM scratch AS base\nADD busybox.tar /\nRUN echo built > /b\n\
         FROM base\nCOPY --from=base /b /c\nRUN cat /c\n",
    );
    let plan = env.plan(&ctx, &[]);
    let base = steps(&plan, 0);
    let run = by_line(&base, "RUN echo");
    assert_eq!(run.cached, Some(false));
    assert!(run.key.is_some());
    let last = steps(&plan, 1);
    // FROM base: the stage's key is known, its files are not.
    assert_eq!(last[0].key, run.key);
    assert_eq!(last[0].cached, Some(false));
    let copy = by_line(&last, "COPY");
    assert_eq!(copy.key, None);
    assert_eq!(copy.cached, None);
    let why = copy.pending.as_deref().unwrap();
    // (The first step of that stage whose layer is not there yet.)
    assert!(
        why.contains("stage base") && why.contains("step 2 (ADD busybox.tar /)"),
        "{why}"
    );
    let after = by_line(&last, "RUN cat");
    assert_eq!(after.key, None);
    assert!(
        after.pending.as_deref().unwrap().contains("step 5"),
        "{after:?}"
    );
    assert!(after.inputs["parent"].is_null());
    assert_eq!(after.inputs["kind"], "run");

    env.build(&ctx, &["-t", "plan/pend"]);
    let plan = env.plan(&ctx, &[]);
    let (base, last) = (steps(&plan, 0), steps(&plan, 1));
    assert_eq!(last[0].cached, Some(true));
    let mut printed = layer_keys(&base);
    printed.extend(layer_keys(&last));
    assert_eq!(printed, env.cache_keys());
    let copy = by_line(&last, "COPY");
    assert_eq!(copy.cached, Some(true));
    assert_eq!(copy.inputs["from"], "base");
    assert_eq!(copy.inputs["sources"][0]["path"], "b");

    // An image in the store is keyed by its manifest digest, unless --pull
    // has the build resolve it in its registry first.
    let digest = env.ok(&["inspect", "plan/pend"]);
    let digest: Value = serde_json::from_str(&digest).unwrap();
    let ctx = env.context("image", "FROM plan/pend\nRUN true\n");
    let s = steps(&env.plan(&ctx, &[]), 0);
    assert_eq!(s[0].inputs["manifest_digest"], digest["Digest"]);
    assert_eq!(s[0].cached, Some(true));
    assert_eq!(s[1].inputs["parent"].as_str(), s[0].key.as_deref());
    let s = steps(&env.plan(&ctx, &["--pull"]), 0);
    assert_eq!(s[0].key, None);
    assert!(s[0].pending.as_deref().unwrap().contains("--pull"), "{s:?}");
    assert_eq!(s[1].key, None);

    // A base image the store does not have: every key of its stage waits.
    let ctx = env.context("absent", "FROM berth-plan-test/absent:1\nRUN true\n");
    let plan = env.plan(&ctx, &[]);
    let s = steps(&plan, 0);
    assert_eq!(s[0].key, None);
    assert!(
        s[0].pending
            .as_deref()
            .unwrap()
            .contains("berth-plan-test/absent:1"),
        "{s:?}"
    );
    assert_eq!((&s[1].key, s[1].cached), (&None, None));
    assert!(s[1].inputs.is_null(), "{s:?}");
}
