//! The build engine: executes the frontend's resolved plan of a Dockerfile
//! ([`crate::dockerfile::resolve_with_base_images`]: words expanded once,
//! base images' ONBUILD triggers in place; independent stages in parallel
//! threads), produces layers through overlay snapshots, reuses
//! content-addressed cache entries and commits the image to the store.
mod bases;
mod fetch;
mod history;
mod plan;
pub mod secret;
mod shared_cache;
mod stage;
mod step_key;

use crate::dockerfile::{self, Dockerfile, Instruction, Lexer};
use crate::exec::run::Runtime;
use crate::image::{Descriptor, ImageConfig};
use crate::layer::Compression;
use crate::progress::{Event, EventKind, Progress};
use crate::store::{CachedLayer, Store};
use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};

/// What to build and how.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Build context directory.
    pub context: PathBuf,
    /// Dockerfile path; `None` means `<context>/Dockerfile`.
    pub dockerfile: Option<PathBuf>,
    pub tags: Vec<String>,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub no_cache: bool,
    pub compression: Compression,
    pub runtime: Runtime,
    /// Network of RUN steps without `--network`: host when true, else none.
    /// Networked by default, as a plain `docker build`: buildkitd's `auto`
    /// network mode is CNI when configured, else the host's network, and
    /// berth has no CNI bridge, so its networked mode is the host's.
    pub network_host: bool,
    /// `--secret id=...,src=...` files.
    pub secrets: BTreeMap<String, PathBuf>,
    /// SOURCE_DATE_EPOCH: clamps file mtimes in layers and sets `created`.
    pub epoch: Option<i64>,
    /// Registry access for `FROM` images missing from the store; `None`
    /// builds from the store only.
    pub registry: Option<crate::registry::Registry>,
    /// `--pull`: re-resolve every (not digest-pinned) base in its registry.
    pub pull: bool,
    /// `--cache-from type=registry,ref=R`: shared caches to reuse steps from.
    pub cache_from: Vec<String>,
    /// `--cache-to type=registry,ref=R`: where to export this build's cache.
    pub cache_to: Option<String>,
}

impl BuildOptions {
    pub fn new(context: PathBuf, runtime: Runtime) -> Self {
        Self {
            context,
            dockerfile: None,
            tags: Vec::new(),
            build_args: BTreeMap::new(),
            target: None,
            no_cache: false,
            compression: Compression::Gzip,
            runtime,
            network_host: true,
            secrets: BTreeMap::new(),
            epoch: crate::layer::tarw::source_date_epoch(),
            registry: None,
            pull: false,
            cache_from: Vec::new(),
            cache_to: None,
        }
    }
}

/// The committed image.
#[derive(Debug, Clone)]
pub struct BuildOutput {
    pub descriptor: Descriptor,
    pub config: ImageConfig,
}

/// The final state of a stage, consumed by dependent stages.
#[derive(Debug, Clone)]
pub struct StageResult {
    pub config: ImageConfig,
    pub layers: Vec<CachedLayer>,
    /// Cache key of the stage's last filesystem state.
    pub key: String,
    /// Planning (`build --print`) only, `None` in a build: why `key` is
    /// not known before the build runs.
    pub(crate) pending: Option<String>,
    /// Planning only: why `layers` are not all in the store yet.
    pub(crate) unbuilt: Option<String>,
    /// Planning only: each step's key, FROM first.
    pub(crate) steps: Vec<plan::StepPlan>,
    /// Planning only: the base image's config is not in the store.
    pub(crate) config_unknown: bool,
}

/// Shared, read-only facts of one build.
pub(crate) struct BuildCtx<'a> {
    pub store: &'a Store,
    pub opts: &'a BuildOptions,
    pub progress: &'a dyn Progress,
    pub dockerfile: Dockerfile,
    pub dockerfile_path: PathBuf,
    pub ignore: crate::dockerfile::IgnoreMatcher,
    /// Stage index → expanded base reference.
    pub bases: Vec<String>,
    pub slots: Vec<Slot>,
    pub step_base: Vec<u32>,
    pub platform: String,
    /// The frontend's resolved plan: the needed stages with every word
    /// expanded and base images' ONBUILD triggers in place. Stages execute
    /// its instructions; nothing is expanded a second time.
    pub plan: dockerfile::BuildPlan,
    /// `build --print`: stages compute and look up every key as a build
    /// does, and execute, download and write nothing ([`plan`]).
    pub planning: bool,
}

/// A stage's result, filled once by its thread and awaited by dependents.
#[derive(Default)]
pub(crate) struct Slot {
    value: Mutex<Option<Result<Arc<StageResult>, String>>>,
    ready: Condvar,
}

impl Slot {
    fn set(&self, v: Result<Arc<StageResult>, String>) {
        if let Ok(mut g) = self.value.lock() {
            *g = Some(v);
        }
        self.ready.notify_all();
    }

    fn wait(&self) -> Result<Arc<StageResult>> {
        let mut g = self
            .value
            .lock()
            .map_err(|_| anyhow!("stage lock poisoned"))?;
        loop {
            if let Some(v) = g.as_ref() {
                return v
                    .clone()
                    .map_err(|e| anyhow!("dependency stage failed: {e}"));
            }
            g = self
                .ready
                .wait(g)
                .map_err(|_| anyhow!("stage lock poisoned"))?;
        }
    }
}

impl BuildCtx<'_> {
    pub fn emit(
        &self,
        kind: EventKind,
        stage: &str,
        step: u32,
        instruction: &str,
        message: String,
    ) {
        let mut e = Event::new(kind);
        e.stage = stage.to_string();
        e.step = step;
        e.instruction = instruction.to_string();
        e.message = message;
        self.progress.event(e);
    }

    /// Finds a stage by name (case-insensitive) or index among those before `before`.
    pub fn stage_ref(&self, name: &str, before: usize) -> Option<usize> {
        let lower = name.to_ascii_lowercase();
        self.dockerfile.stages[..before]
            .iter()
            .find(|s| s.name.as_deref() == Some(lower.as_str()))
            .map(|s| s.index)
            .or_else(|| name.parse::<usize>().ok().filter(|i| *i < before))
    }

    pub fn wait_stage(&self, index: usize) -> Result<Arc<StageResult>> {
        // Only planned stages run: waiting on another would never end.
        if self.plan.stage(index).is_none() {
            bail!("stage {index} is not part of this build's plan");
        }
        self.slots[index].wait()
    }
}

/// Builds the image described by `opts` and commits it to `store`.
pub fn build(store: &Store, opts: &BuildOptions, progress: &dyn Progress) -> Result<BuildOutput> {
    let started = std::time::Instant::now();
    let result = build_inner(store, opts, progress, started);
    if let Err(e) = &result {
        let mut ev = Event::new(EventKind::Error);
        ev.message = format!("{e:#}");
        progress.event(ev);
    }
    result
}

/// A Dockerfile read and parsed for one build, with what FROM lines need.
struct Loaded {
    context: PathBuf,
    dockerfile_path: PathBuf,
    df: Dockerfile,
    ignore: crate::dockerfile::IgnoreMatcher,
    /// Global ARGs in effect (build args over defaults).
    global_args: BTreeMap<String, Option<String>>,
    /// Stage index → expanded base reference.
    bases: Vec<String>,
    target: usize,
}

impl Loaded {
    fn read(opts: &BuildOptions) -> Result<Loaded> {
        let context = opts
            .context
            .canonicalize()
            .with_context(|| format!("build context {}", opts.context.display()))?;
        let dockerfile_path = opts
            .dockerfile
            .clone()
            .unwrap_or_else(|| context.join("Dockerfile"));
        let text = dockerfile::read_dockerfile(&dockerfile_path)
            .with_context(|| format!("reading {}", dockerfile_path.display()))?;
        let name = dockerfile_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let df = dockerfile::parse(&text).map_err(|e| anyhow!("{}", e.with_file(name)))?;
        if df.stages.is_empty() {
            bail!("the Dockerfile has no FROM instruction");
        }
        let ignore = read_dockerignore(&context, &dockerfile_path)?;
        let lexer = Lexer::new(df.directives.escape);

        // Global ARGs: visible in FROM lines; build args override defaults.
        let mut global_args: BTreeMap<String, Option<String>> = BTreeMap::new();
        for a in predefined_args() {
            global_args.insert(a.0.to_string(), Some(a.1));
        }
        for node in &df.global_args {
            if let Instruction::Arg(decls) = &node.instruction {
                for d in decls {
                    let lookup = |k: &str| global_args.get(k).cloned().flatten();
                    let default = match &d.default {
                        Some(v) => Some(
                            lexer
                                .process_word(v, &lookup)
                                .map_err(|e| anyhow!("line {}: {e}", node.line))?,
                        ),
                        None => None,
                    };
                    let value = opts.build_args.get(&d.name).cloned().or(default);
                    global_args.insert(d.name.clone(), value);
                }
            }
        }
        let mut bases = Vec::new();
        for s in &df.stages {
            let lookup = |k: &str| global_args.get(k).cloned().flatten();
            bases.push(
                lexer
                    .process_word(&s.base, &lookup)
                    .map_err(|e| anyhow!("line {}: {e}", s.line))?,
            );
        }
        let target = match &opts.target {
            Some(t) => {
                let lower = t.to_ascii_lowercase();
                df.stages
                    .iter()
                    .find(|s| s.name.as_deref() == Some(lower.as_str()))
                    .map(|s| s.index)
                    .with_context(|| format!("target stage {t:?} could not be found"))?
            }
            None => df.stages.len() - 1,
        };
        Ok(Loaded {
            context,
            dockerfile_path,
            df,
            ignore,
            global_args,
            bases,
            target,
        })
    }

    /// A word expanded with the global ARGs (FROM-level references).
    fn expand(&self, w: &str) -> String {
        let lookup = |k: &str| self.global_args.get(k).cloned().flatten();
        Lexer::new(self.df.directives.escape)
            .process_word(w, &lookup)
            .unwrap_or_else(|_| w.to_string())
    }

    /// The context of one build (or plan) of `plan` against `store`.
    fn into_ctx<'a>(
        self,
        store: &'a Store,
        opts: &'a BuildOptions,
        progress: &'a dyn Progress,
        plan: dockerfile::BuildPlan,
        planning: bool,
    ) -> (BuildCtx<'a>, PathBuf) {
        let mut step_base = vec![0u32; self.df.stages.len()];
        let mut n = 0u32;
        for s in &self.df.stages {
            if let Some(p) = plan.stage(s.index) {
                step_base[s.index] = n;
                n += 1 + p.instructions.len() as u32;
            }
        }
        let ctx = BuildCtx {
            store,
            opts,
            progress,
            slots: (0..self.df.stages.len()).map(|_| Slot::default()).collect(),
            dockerfile: self.df,
            dockerfile_path: self.dockerfile_path,
            ignore: self.ignore,
            bases: self.bases,
            step_base,
            platform: format!("linux/{}", crate::image::host_arch()),
            plan,
            planning,
        };
        (ctx, self.context)
    }
}

/// Runs every planned stage of `ctx`, each in its own thread (a stage
/// waits for those it depends on), filling `ctx.slots`.
fn run_stages(ctx: &BuildCtx<'_>, context_dir: &std::path::Path) {
    let needed: BTreeSet<usize> = ctx.plan.stages.iter().map(|s| s.index).collect();
    std::thread::scope(|scope| {
        for &i in &needed {
            scope.spawn(move || {
                let r = stage::run_stage(ctx, i, context_dir)
                    .map(Arc::new)
                    .map_err(|e| format!("{e:#}"));
                ctx.slots[i].set(r);
            });
        }
    });
}

/// The target's result, its own failure worded as the target's.
fn target_result(ctx: &BuildCtx<'_>, target: usize) -> Result<Arc<StageResult>> {
    ctx.wait_stage(target).map_err(|e| {
        anyhow!(
            "{}",
            e.to_string()
                .trim_start_matches("dependency stage failed: ")
        )
    })
}

fn build_inner(
    store: &Store,
    opts: &BuildOptions,
    progress: &dyn Progress,
    started: std::time::Instant,
) -> Result<BuildOutput> {
    let loaded = Loaded::read(opts)?;
    let lexer = Lexer::new(loaded.df.directives.escape);
    let needed = needed_stages(
        &loaded.df,
        &loaded.bases,
        &loaded.global_args,
        &lexer,
        loaded.target,
    );
    let expand = |w: &str| loaded.expand(w);
    bases::pull_bases(
        store,
        opts,
        &loaded.df.stages,
        &loaded.bases,
        &needed,
        &expand,
        progress,
    )?;
    let link = shared_cache::link(store, opts, progress)?;
    let linked;
    let store = match &link {
        Some(l) => {
            linked = store.with_cache_link(l.clone());
            &linked
        }
        None => store,
    };
    let plan = plan_build(store, opts, &loaded.df)?;
    let target = loaded.target;
    let (ctx, context_dir) = loaded.into_ctx(store, opts, progress, plan, false);
    run_stages(&ctx, &context_dir);
    let result = target_result(&ctx, target)?;
    let mut config = result.config.clone();
    history::fill_created(&mut config.history);
    if config.created.is_none() {
        config.created = Some(history::timestamp(opts.epoch));
    }
    let layers: Vec<Descriptor> = result.layers.iter().map(|l| l.descriptor.clone()).collect();
    let descriptor = store.commit_image(&config, layers, &opts.tags)?;
    if let Some(l) = &link {
        shared_cache::export(store, opts, l, progress)?;
    }
    let mut done = Event::new(EventKind::Done);
    done.image_digest = descriptor.digest.clone();
    done.seconds = started.elapsed().as_secs_f64();
    progress.event(done);
    Ok(BuildOutput { descriptor, config })
}

/// The frontend's plan of `df` for this build: build args, `--target`, the
/// host platform; base images' Env and ONBUILD triggers come from the store
/// (bases were pulled before).
pub fn plan_build(
    store: &Store,
    opts: &BuildOptions,
    df: &Dockerfile,
) -> Result<dockerfile::BuildPlan> {
    resolve_plan(df, opts, &mut |image| {
        let img = store.resolve(image).map_err(|e| format!("{e:#}"))?;
        Ok(dockerfile::BaseImage {
            env: img.config.config.env,
            onbuild: img.config.config.on_build,
        })
    })
}

fn resolve_plan(
    df: &Dockerfile,
    opts: &BuildOptions,
    base: &mut dyn FnMut(&str) -> Result<dockerfile::BaseImage, dockerfile::BaseEnvError>,
) -> Result<dockerfile::BuildPlan> {
    let ropts = dockerfile::ResolveOptions {
        build_args: opts.build_args.clone(),
        target: opts.target.clone(),
        target_platform: dockerfile::Platform::host(),
        build_platform: dockerfile::Platform::host(),
    };
    dockerfile::resolve_with_base_images(df, &ropts, &mut |image, _platform| base(image))
        .map_err(|e| anyhow!("{e}"))
}

/// `build --print`: the plan [`build`] would execute for `opts`, as JSON,
/// each step with its cache key, what the key hashed and whether `store`
/// has it ([`plan`]; docs/build-plan.md). Nothing is pulled, run or
/// written: a base image that is not in the store (a build would pull it
/// first) is planned without its Env and ONBUILD triggers, said so on
/// stderr, and its stage's keys are pending.
pub fn plan_json(opts: &BuildOptions, store: &Store) -> Result<String> {
    let loaded = Loaded::read(opts)?;
    let plan = resolve_plan(&loaded.df, opts, &mut |image| match store.resolve(image) {
        Ok(img) => Ok(dockerfile::BaseImage {
            env: img.config.config.env,
            onbuild: img.config.config.on_build,
        }),
        Err(_) => {
            eprintln!("note: base image {image} is not in the store: planned without its Env and ONBUILD triggers");
            Ok(dockerfile::BaseImage::default())
        }
    })?;
    let mut json = serde_json::to_value(&plan)?;
    let target = loaded.target;
    let quiet = crate::progress::Quiet;
    let (ctx, context_dir) = loaded.into_ctx(store, opts, &quiet, plan, true);
    run_stages(&ctx, &context_dir);
    // A stage that cannot even be planned (a missing COPY source, …) fails
    // the plan as it would fail the build.
    target_result(&ctx, target)?;
    let mut results = BTreeMap::new();
    for s in &ctx.plan.stages {
        results.insert(s.index, ctx.wait_stage(s.index)?);
    }
    plan::annotate(&mut json, &|i| results.get(&i).map(|r| r.steps.clone()))?;
    if let Value::Object(top) = &mut json {
        top.insert("platform".into(), Value::String(ctx.platform.clone()));
        // With --no-cache a build looks nothing up: every layer step runs.
        top.insert("no_cache".into(), Value::Bool(opts.no_cache));
    }
    Ok(serde_json::to_string_pretty(&json)?)
}

/// TARGETPLATFORM & co, which BuildKit predefines for `ARG` declarations.
fn predefined_args() -> Vec<(&'static str, String)> {
    let arch = crate::image::host_arch();
    let platform = format!("linux/{arch}");
    vec![
        ("TARGETPLATFORM", platform.clone()),
        ("TARGETOS", "linux".into()),
        ("TARGETARCH", arch.into()),
        ("TARGETVARIANT", String::new()),
        ("BUILDPLATFORM", platform),
        ("BUILDOS", "linux".into()),
        ("BUILDARCH", arch.into()),
        ("BUILDVARIANT", String::new()),
    ]
}

/// Stages the target depends on (FROM stage, COPY --from, RUN --mount from=), target included.
fn needed_stages(
    df: &Dockerfile,
    bases: &[String],
    global_args: &BTreeMap<String, Option<String>>,
    lexer: &Lexer,
    target: usize,
) -> BTreeSet<usize> {
    let find = |name: &str, before: usize| {
        let lower = name.to_ascii_lowercase();
        df.stages[..before]
            .iter()
            .find(|s| s.name.as_deref() == Some(lower.as_str()))
            .map(|s| s.index)
            .or_else(|| name.parse::<usize>().ok().filter(|i| *i < before))
    };
    let lookup = |k: &str| global_args.get(k).cloned().flatten();
    let mut needed = BTreeSet::new();
    let mut todo = vec![target];
    while let Some(i) = todo.pop() {
        if !needed.insert(i) {
            continue;
        }
        let mut refs: Vec<String> = vec![bases[i].clone()];
        for node in &df.stages[i].instructions {
            match &node.instruction {
                Instruction::Copy(c) => refs.extend(c.from.clone()),
                Instruction::Run(r) => refs.extend(r.mounts.iter().filter_map(|m| m.from.clone())),
                _ => {}
            }
        }
        for r in refs {
            let r = lexer.process_word(&r, &lookup).unwrap_or(r);
            if let Some(dep) = find(&r, i) {
                todo.push(dep);
            }
        }
    }
    needed
}

/// The context's ignore file: `<Dockerfile>.dockerignore` next to the
/// Dockerfile, else `.dockerignore` at the context root.
fn read_dockerignore(
    context: &std::path::Path,
    dockerfile: &std::path::Path,
) -> Result<crate::dockerfile::IgnoreMatcher> {
    let Some(path) = dockerfile::find_ignore_file(context, dockerfile) else {
        return Ok(crate::dockerfile::IgnoreMatcher::default());
    };
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    crate::dockerfile::IgnoreMatcher::from_dockerignore(&text)
        .map_err(|e| anyhow!("{}: {e}", path.display()))
}
