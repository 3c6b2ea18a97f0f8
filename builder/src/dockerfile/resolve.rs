//! Build planning: ARG scoping, variable expansion per stage, the stage
//! dependency graph and `--target` pruning (what BuildKit's dockerfile2llb
//! does before it emits LLB).
//!
//! Scoping rules implemented here (Dockerfile reference, "Understand how ARG
//! and FROM interact" / "Scope"):
//! * ARGs before the first FROM (global) plus the automatic platform args
//!   (`TARGETPLATFORM`, `TARGETOS`, `TARGETARCH`, `TARGETVARIANT`,
//!   `BUILDPLATFORM`, `BUILDOS`, `BUILDARCH`, `BUILDVARIANT`) are visible in
//!   FROM lines only;
//! * inside a stage an ARG is visible from its declaration on; `ARG NAME`
//!   without a value takes the global value of NAME (if any); a build arg
//!   overrides both;
//! * ENV wins over ARG of the same name; ENV values flow from a stage to the
//!   stages built FROM it, ARGs do not;
//! * the predefined proxy args are passed to RUN without being declared.

use std::collections::{BTreeMap, BTreeSet};

use super::ast::*;
use super::error::ParseError;
use super::lex::Lexer;
use super::mount;
use super::parser::parse_onbuild_trigger;
use super::platform::Platform;
use super::reference::check_reference;

/// Build args usable in RUN without an `ARG` declaration (and never reported
/// as unused). The engine should keep them out of image history.
pub const PREDEFINED_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Inputs of [`resolve`].
#[derive(Debug, Clone)]
pub struct ResolveOptions {
    /// `--build-arg NAME=VALUE`.
    pub build_args: BTreeMap<String, String>,
    /// `--target`: stage name; `None` builds the last stage.
    pub target: Option<String>,
    /// Platform the image is built for (`TARGET*` args).
    pub target_platform: Platform,
    /// Platform the build runs on (`BUILD*` args).
    pub build_platform: Platform,
}

impl ResolveOptions {
    /// No build args, last stage, host platform for both.
    pub fn host() -> Self {
        ResolveOptions {
            build_args: BTreeMap::new(),
            target: None,
            target_platform: Platform::host(),
            build_platform: Platform::host(),
        }
    }
}

/// What a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Base {
    Scratch,
    /// Image reference (expanded).
    Image(String),
    /// An earlier stage (its Dockerfile index).
    Stage(usize),
}

/// Stages needed for the target, fully expanded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BuildPlan {
    /// Needed stages only, dependencies before dependents (ties in file
    /// order). Stages whose dependencies are all built can run in parallel.
    pub stages: Vec<ResolvedStage>,
    /// Dockerfile index of the target stage.
    pub target: usize,
    /// Build args no ARG instruction declares (BuildKit warns about them).
    pub unused_build_args: Vec<String>,
}

impl BuildPlan {
    /// The stage with this Dockerfile index, if it is part of the plan.
    pub fn stage(&self, index: usize) -> Option<&ResolvedStage> {
        self.stages.iter().find(|s| s.index == index)
    }
}

/// One stage of a [`BuildPlan`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ResolvedStage {
    /// Position in the Dockerfile.
    pub index: usize,
    pub name: Option<String>,
    pub base: Base,
    /// Expanded `--platform`.
    pub platform: Option<String>,
    pub line: usize,
    pub original: String,
    /// Dockerfile indices of the stages this one needs (base stage,
    /// `COPY --from`, `RUN --mount=from=`), sorted.
    pub deps: Vec<usize>,
    /// Images named by `COPY --from` / `RUN --mount=from=` (not stages).
    pub images: Vec<String>,
    pub instructions: Vec<ResolvedNode>,
    /// ENV in effect at the end of the stage (base image env + ENV lines),
    /// in image-config order.
    pub env: Vec<(String, String)>,
    /// The stage's own ONBUILD expressions: the image config's `OnBuild`
    /// (inherited triggers were consumed by running them).
    pub onbuild: Vec<String>,
}

/// An instruction with every BuildKit-expanded word expanded and unquoted:
/// ENV/LABEL keys and values, ARG names/defaults, EXPOSE (split into words
/// and normalised to one `port/proto` entry per port), VOLUME, USER, WORKDIR,
/// STOPSIGNAL, COPY/ADD paths and flags (heredoc bodies unless the delimiter
/// was quoted), RUN mount paths/ids/from (mount defaults filled in: cache
/// id, secret id/target, ssh id). RUN, CMD, ENTRYPOINT, SHELL, HEALTHCHECK,
/// MAINTAINER and ONBUILD are left as written.
///
/// In a resolved `ARG`, [`ArgDecl::default`] holds the value in effect (build
/// arg, else default, else the global value), `None` when unset. COPY/ADD
/// `--chmod` is validated as octal; `--from` names are classified into
/// [`ResolvedStage::deps`] / [`ResolvedStage::images`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ResolvedNode {
    pub line: usize,
    pub original: String,
    pub instruction: Instruction,
    /// Build args in effect after this instruction (declared ARGs with a
    /// value, plus predefined proxy args given with `--build-arg`), sorted.
    /// RUN sees them as environment variables unless ENV sets the same name.
    pub build_args: Vec<(String, String)>,
    /// True for an ONBUILD trigger inherited from the base (its `line` is the
    /// FROM line and `original` the trigger expression).
    pub trigger: bool,
}

/// Error type of the base-image environment lookup.
pub type BaseEnvError = Box<dyn std::error::Error + Send + Sync>;

/// Returns the config `Env` (`KEY=VALUE`) of an image reference for an
/// optional `--platform`.
pub type BaseEnvFn<'a> = dyn FnMut(&str, Option<&str>) -> Result<Vec<String>, BaseEnvError> + 'a;

/// What planning needs from a base image's config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BaseImage {
    /// `Env` (`KEY=VALUE` strings).
    pub env: Vec<String>,
    /// `OnBuild` trigger expressions; they run first in the stage.
    pub onbuild: Vec<String>,
}

/// Returns the config facts of an image reference for an optional `--platform`.
pub type BaseImageFn<'a> = dyn FnMut(&str, Option<&str>) -> Result<BaseImage, BaseEnvError> + 'a;

/// Expands and plans a parsed Dockerfile, ignoring ONBUILD triggers of base
/// images (see [`resolve_with_base_images`]).
///
/// `base_env` returns the `Env` (`KEY=VALUE` strings) of an image's config; it
/// is called once for each base image of a needed stage, with the expanded
/// reference and `--platform`, because words in a stage may use variables the
/// base image defines (`WORKDIR $GOPATH/src`).
pub fn resolve(
    df: &Dockerfile,
    opts: &ResolveOptions,
    base_env: &mut BaseEnvFn<'_>,
) -> Result<BuildPlan, ParseError> {
    resolve_with_base_images(df, opts, &mut |r, p| {
        Ok(BaseImage {
            env: base_env(r, p)?,
            onbuild: Vec::new(),
        })
    })
}

/// Like [`resolve`], and also runs `OnBuild` triggers: those of a base
/// image (from `base_image`) and those declared by a base *stage* are
/// inserted, parsed and expanded, at the start of the stage
/// ([`ResolvedNode::trigger`] is set on them).
pub fn resolve_with_base_images(
    df: &Dockerfile,
    opts: &ResolveOptions,
    base_image: &mut BaseImageFn<'_>,
) -> Result<BuildPlan, ParseError> {
    let lexer = Lexer::new(df.directives.escape);
    let meta = global_scope(df, opts, &lexer)?;
    let mut bases = Vec::with_capacity(df.stages.len());
    for stage in &df.stages {
        bases.push(resolve_base(df, stage, &meta, &lexer)?);
    }
    let Some(last) = df.stages.len().checked_sub(1) else {
        return Err(ParseError::new(0, "dockerfile contains no stages to build"));
    };
    let target = match &opts.target {
        None => last,
        Some(t) => {
            let t = t.to_ascii_lowercase();
            df.stages
                .iter()
                .position(|s| s.name.as_deref() == Some(t.as_str()))
                .ok_or_else(|| {
                    ParseError::new(0, format!("target stage {t:?} could not be found"))
                })?
        }
    };
    let ctx = Ctx {
        df,
        opts,
        lexer,
        meta: &meta,
        bases: &bases,
    };

    // Pass 1: dependencies of every stage, without base image environments
    // and tolerating expansion errors, so that only needed images are asked
    // for and errors in unneeded stages don't fail the build (as in BuildKit).
    let mut lenient: Vec<ResolvedStage> = Vec::with_capacity(df.stages.len());
    for stage in &df.stages {
        let inherited = inherited(
            &bases[stage.index],
            &lenient,
            &mut |_, _| Ok(BaseImage::default()),
            stage,
        )?;
        lenient.push(ctx.stage(stage, inherited, false)?);
    }
    let graph: Vec<Vec<usize>> = lenient.iter().map(|s| s.deps.clone()).collect();
    let needed = reachable(&graph, target);
    check_cycles(df, &graph, &needed)?;

    // Pass 2: the needed stages, strictly, in file order (a FROM can only
    // name an earlier stage, so its env is ready).
    let mut done: Vec<ResolvedStage> = Vec::new();
    for stage in df.stages.iter().filter(|s| needed.contains(&s.index)) {
        let inherited = inherited(&bases[stage.index], &done, base_image, stage)?;
        let resolved = ctx.stage(stage, inherited, true)?;
        if let Some(d) = resolved.deps.iter().find(|d| !needed.contains(d)) {
            return Err(ParseError::new(
                stage.line,
                format!(
                    "stage {} depends on stage {d} only through its base image (an ONBUILD trigger or an image variable); this is not supported",
                    stage.index
                ),
            ));
        }
        done.push(resolved);
    }
    let graph2: Vec<Vec<usize>> = (0..df.stages.len())
        .map(|i| {
            done.iter()
                .find(|s| s.index == i)
                .map(|s| s.deps.clone())
                .unwrap_or_default()
        })
        .collect();
    check_cycles(df, &graph2, &needed)?;
    let order = topo_order(&graph2, &needed);
    let mut stages = Vec::with_capacity(order.len());
    for i in order {
        if let Some(pos) = done.iter().position(|s| s.index == i) {
            stages.push(done.swap_remove(pos));
        }
    }
    Ok(BuildPlan {
        stages,
        target,
        unused_build_args: unused_build_args(df, opts),
    })
}

/// Values visible in FROM lines: platform args, then global ARGs in order
/// (defaults expanded with what precedes them, build args override).
fn global_scope(
    df: &Dockerfile,
    opts: &ResolveOptions,
    lexer: &Lexer,
) -> Result<BTreeMap<String, Option<String>>, ParseError> {
    let mut meta: BTreeMap<String, Option<String>> = opts
        .target_platform
        .args("TARGET")
        .into_iter()
        .chain(opts.build_platform.args("BUILD"))
        .map(|(k, v)| (k, Some(v)))
        .collect();
    for node in &df.global_args {
        let Instruction::Arg(decls) = &node.instruction else {
            continue;
        };
        for decl in decls {
            let lookup = |k: &str| meta.get(k).cloned().flatten();
            let name = lexer
                .process_word(&decl.name, &lookup)
                .map_err(|e| ParseError::new(node.line, e))?;
            let value = match (opts.build_args.get(&name), &decl.default) {
                (Some(v), _) => v.clone(),
                (None, Some(d)) => lexer
                    .process_word(d, &lookup)
                    .map_err(|e| ParseError::new(node.line, e))?,
                // Declared without a value: keeps an automatic value
                // (`ARG TARGETPLATFORM`), otherwise declared but unset.
                (None, None) => {
                    meta.entry(name).or_insert(None);
                    continue;
                }
            };
            meta.insert(name, Some(value));
        }
    }
    Ok(meta)
}

fn resolve_base(
    df: &Dockerfile,
    stage: &Stage,
    meta: &BTreeMap<String, Option<String>>,
    lexer: &Lexer,
) -> Result<(Base, Option<String>), ParseError> {
    let lookup = |k: &str| meta.get(k).cloned().flatten();
    let err = |e: String| ParseError::new(stage.line, e);
    let name = lexer.process_word(&stage.base, &lookup).map_err(err)?;
    if name.is_empty() {
        return Err(ParseError::new(
            stage.line,
            format!("base name ({}) should not be blank", stage.base),
        ));
    }
    let platform = match &stage.platform {
        Some(p) => Some(lexer.process_word(p, &lookup).map_err(err)?),
        None => None,
    };
    // Stage names (lowercased when declared) and `scratch` match exactly;
    // anything else must be a valid image reference (BuildKit).
    let base = if let Some(s) = df.stages[..stage.index]
        .iter()
        .find(|s| s.name.as_deref() == Some(name.as_str()))
    {
        Base::Stage(s.index)
    } else if name == "scratch" {
        Base::Scratch
    } else {
        check_reference(&name).map_err(|e| {
            ParseError::new(
                stage.line,
                format!("failed to parse stage name {name:?}: {e}"),
            )
        })?;
        Base::Image(name)
    };
    Ok((base, platform))
}

/// ENV and ONBUILD triggers a stage starts with: from its base stage, or
/// from the base image's config.
fn inherited(
    base: &(Base, Option<String>),
    done: &[ResolvedStage],
    base_image: &mut BaseImageFn<'_>,
    stage: &Stage,
) -> Result<Inherited, ParseError> {
    match &base.0 {
        Base::Scratch => Ok(Inherited::default()),
        Base::Stage(i) => Ok(done
            .iter()
            .find(|s| s.index == *i)
            .map(|s| Inherited {
                env: s.env.clone(),
                triggers: s.onbuild.clone(),
            })
            .unwrap_or_default()),
        Base::Image(r) => {
            let img = base_image(r, base.1.as_deref()).map_err(|e| {
                ParseError::new(stage.line, format!("failed to get the config of {r}: {e}"))
            })?;
            let env = img
                .env
                .into_iter()
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (kv, String::new()),
                })
                .collect();
            Ok(Inherited {
                env,
                triggers: img.onbuild,
            })
        }
    }
}

#[derive(Default)]
struct Inherited {
    env: Vec<(String, String)>,
    triggers: Vec<String>,
}

struct Ctx<'a> {
    df: &'a Dockerfile,
    opts: &'a ResolveOptions,
    lexer: Lexer,
    meta: &'a BTreeMap<String, Option<String>>,
    bases: &'a [(Base, Option<String>)],
}

/// Variables of a stage while walking its instructions.
struct Scope {
    /// The image config's Env.
    env: Vec<(String, String)>,
    args: BTreeMap<String, String>,
    /// BuildKit's state env, which words expand against: ENV and ARG (with
    /// a value) both write it, so the later of the two wins.
    vars: BTreeMap<String, String>,
}

impl Scope {
    fn lookup(&self, name: &str) -> Option<String> {
        self.vars.get(name).cloned()
    }

    fn set_env(&mut self, key: String, value: String) {
        self.vars.insert(key.clone(), value.clone());
        match self.env.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.env.push((key, value)),
        }
    }

    fn set_arg(&mut self, key: String, value: String) {
        self.vars.insert(key.clone(), value.clone());
        self.args.insert(key, value);
    }
}

/// A `--from` value: a stage or an image.
enum FromRef {
    Stage(usize),
    Image(String),
}

impl Ctx<'_> {
    fn stage(
        &self,
        stage: &Stage,
        inherited: Inherited,
        strict: bool,
    ) -> Result<ResolvedStage, ParseError> {
        let (base, platform) = self.bases[stage.index].clone();
        let mut scope = Scope {
            vars: inherited.env.iter().cloned().collect(),
            env: inherited.env,
            args: BTreeMap::new(),
        };
        let mut deps = BTreeSet::new();
        let mut images = BTreeSet::new();
        if let Base::Stage(i) = base {
            deps.insert(i);
        }
        // Triggers of the base run first, as if written right after FROM.
        let mut nodes: Vec<(Node, bool)> = Vec::new();
        for expr in &inherited.triggers {
            match parse_onbuild_trigger(expr) {
                Ok(instruction) => nodes.push((
                    Node {
                        line: stage.line,
                        original: expr.trim().to_string(),
                        instruction,
                    },
                    true,
                )),
                Err(e) if strict => return Err(ParseError::new(stage.line, e.message)),
                Err(_) => {}
            }
        }
        nodes.extend(stage.instructions.iter().map(|n| (n.clone(), false)));
        let mut instructions = Vec::with_capacity(nodes.len());
        let mut onbuild = Vec::new();
        for (node, trigger) in nodes {
            let expanded = self
                .instruction(&node.instruction, &mut scope)
                .and_then(|ins| {
                    for from in froms(&ins) {
                        match self.classify_from(from, stage.index)? {
                            FromRef::Stage(i) => deps.insert(i),
                            FromRef::Image(r) => images.insert(r),
                        };
                    }
                    Ok(ins)
                });
            let instruction = match expanded {
                Ok(i) => i,
                Err(e) if strict => return Err(ParseError::new(node.line, e)),
                Err(_) => continue,
            };
            if let Instruction::OnBuild(o) = &instruction {
                onbuild.push(o.expression.clone());
            }
            instructions.push(ResolvedNode {
                line: node.line,
                original: node.original,
                instruction,
                build_args: self.build_args_in_effect(&scope),
                trigger,
            });
        }
        Ok(ResolvedStage {
            index: stage.index,
            name: stage.name.clone(),
            base,
            platform,
            line: stage.line,
            original: stage.original.clone(),
            deps: deps.into_iter().collect(),
            images: images.into_iter().collect(),
            instructions,
            env: scope.env,
            onbuild,
        })
    }

    fn build_args_in_effect(&self, scope: &Scope) -> Vec<(String, String)> {
        let mut out = scope.args.clone();
        for name in PREDEFINED_ARGS {
            if let Some(v) = self.opts.build_args.get(name) {
                out.entry(name.to_string()).or_insert_with(|| v.clone());
            }
        }
        out.into_iter().collect()
    }

    fn classify_from(&self, from: &str, this: usize) -> Result<FromRef, String> {
        // Unlike FROM, `--from` finds a stage whatever the case (Docker
        // 20.10's BuildKit builds `COPY --from=MIDDLE` from stage `middle`).
        let lower = from.to_ascii_lowercase();
        if let Some(s) = self
            .df
            .stages
            .iter()
            .find(|s| s.name.as_deref() == Some(lower.as_str()))
        {
            if s.index == this {
                return Err(format!("circular dependency detected on stage: {lower}"));
            }
            return Ok(FromRef::Stage(s.index));
        }
        if let Ok(i) = from.parse::<usize>() {
            if i >= self.df.stages.len() {
                return Err(format!("invalid stage index {i}"));
            }
            if i == this {
                return Err(format!("circular dependency detected on stage: {i}"));
            }
            return Ok(FromRef::Stage(i));
        }
        Ok(FromRef::Image(from.to_string()))
    }

    fn word(&self, w: &str, scope: &Scope) -> Result<String, String> {
        self.lexer.process_word(w, &|k| scope.lookup(k))
    }

    fn opt_word(&self, w: &Option<String>, scope: &Scope) -> Result<Option<String>, String> {
        w.as_deref().map(|w| self.word(w, scope)).transpose()
    }

    fn instruction(&self, ins: &Instruction, scope: &mut Scope) -> Result<Instruction, String> {
        Ok(match ins {
            Instruction::Env(kvs) => {
                let expanded = self.key_values(kvs, scope, "ENV")?;
                for kv in &expanded {
                    scope.set_env(kv.key.clone(), kv.value.clone());
                }
                Instruction::Env(expanded)
            }
            Instruction::Label(kvs) => Instruction::Label(self.key_values(kvs, scope, "LABEL")?),
            Instruction::Arg(decls) => {
                let mut out = Vec::with_capacity(decls.len());
                for d in decls {
                    let name = self.word(&d.name, scope)?;
                    if name.is_empty() {
                        return Err("ARG names can not be blank".to_string());
                    }
                    let value = if let Some(v) = self.opts.build_args.get(&name) {
                        Some(v.clone())
                    } else if let Some(def) = &d.default {
                        Some(self.word(def, scope)?)
                    } else {
                        self.meta.get(&name).cloned().flatten()
                    };
                    if let Some(v) = &value {
                        scope.set_arg(name.clone(), v.clone());
                    }
                    out.push(ArgDecl {
                        name,
                        default: value,
                    });
                }
                Instruction::Arg(out)
            }
            Instruction::Expose(ports) => {
                let mut out = Vec::new();
                for p in ports {
                    for w in self.lexer.process_words(p, &|k| scope.lookup(k))? {
                        out.extend(normalize_port(&w)?);
                    }
                }
                Instruction::Expose(out)
            }
            Instruction::Volume(vols) => {
                let mut out = Vec::with_capacity(vols.len());
                for v in vols {
                    let v = self.word(v, scope)?;
                    if v.trim().is_empty() {
                        return Err("VOLUME specified can not be an empty string".to_string());
                    }
                    out.push(v);
                }
                Instruction::Volume(out)
            }
            Instruction::User(u) => Instruction::User(self.word(u, scope)?),
            Instruction::Workdir(w) => Instruction::Workdir(self.word(w, scope)?),
            Instruction::StopSignal(s) => Instruction::StopSignal(self.word(s, scope)?),
            Instruction::Copy(c) => Instruction::Copy(Copy {
                files: self.file_spec(&c.files, scope)?,
                from: self.opt_word(&c.from, scope)?.filter(|f| !f.is_empty()),
            }),
            Instruction::Add(a) => Instruction::Add(Add {
                files: self.file_spec(&a.files, scope)?,
                checksum: self.opt_word(&a.checksum, scope)?,
                keep_git_dir: a.keep_git_dir,
            }),
            Instruction::Run(r) => {
                let mut run = r.clone();
                for m in &mut run.mounts {
                    m.target = self.opt_word(&m.target, scope)?;
                    m.source = self.opt_word(&m.source, scope)?;
                    m.from = self.opt_word(&m.from, scope)?.filter(|f| !f.is_empty());
                    m.id = self.opt_word(&m.id, scope)?;
                    m.env = self.opt_word(&m.env, scope)?;
                    mount::finalize(m);
                }
                Instruction::Run(run)
            }
            other => other.clone(),
        })
    }

    /// ENV/LABEL: every pair is expanded with the scope from before the
    /// instruction (`ENV a=1 b=$a` gives b the *previous* a).
    fn key_values(
        &self,
        kvs: &[KeyValue],
        scope: &Scope,
        what: &str,
    ) -> Result<Vec<KeyValue>, String> {
        kvs.iter()
            .map(|kv| {
                let key = self.word(&kv.key, scope)?;
                if key.is_empty() {
                    return Err(format!("{what} names can not be blank"));
                }
                Ok(KeyValue {
                    key,
                    value: self.word(&kv.value, scope)?,
                })
            })
            .collect()
    }

    fn file_spec(&self, f: &FileSpec, scope: &Scope) -> Result<FileSpec, String> {
        let mut sources = Vec::with_capacity(f.sources.len());
        for s in &f.sources {
            sources.push(match s {
                Source::Path(p) => Source::Path(self.word(p, scope)?),
                Source::Heredoc(h) if h.expand => {
                    // Bodies keep their quotes; only `$` and `\` are special.
                    let mut lx = Lexer::new('\\');
                    lx.skip_quotes = true;
                    let mut h = h.clone();
                    h.content = lx.process_word(&h.content, &|k| scope.lookup(k))?;
                    Source::Heredoc(h)
                }
                Source::Heredoc(h) => Source::Heredoc(h.clone()),
            });
        }
        let chmod = self.opt_word(&f.chmod, scope)?;
        if let Some(c) = &chmod {
            parse_octal_mode(c)?;
        }
        Ok(FileSpec {
            sources,
            dest: self.word(&f.dest, scope)?,
            chown: self.opt_word(&f.chown, scope)?,
            chmod,
            link: f.link,
            excludes: f
                .excludes
                .iter()
                .map(|e| self.word(e, scope))
                .collect::<Result<_, _>>()?,
            parents: f.parents,
        })
    }
}

/// `--from` values of an (expanded) instruction.
fn froms(ins: &Instruction) -> Vec<&str> {
    match ins {
        Instruction::Copy(c) => c.from.iter().map(String::as_str).collect(),
        Instruction::Run(r) => r.mounts.iter().filter_map(|m| m.from.as_deref()).collect(),
        _ => Vec::new(),
    }
}

/// `80`, `80/udp`, `8000-8002/tcp` → `["80/tcp"]`, ..., one entry per port
/// (as BuildKit's `nat.ParsePortSpecs` gives them to the config).
pub fn normalize_port(spec: &str) -> Result<Vec<String>, String> {
    let (ports, proto) = match spec.split_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto: {proto}"));
    }
    let parse = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("invalid containerPort: {spec}"))
    };
    let (start, end) = match ports.split_once('-') {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => {
            let p = parse(ports)?;
            (p, p)
        }
    };
    if end < start {
        return Err(format!(
            "invalid range specified for container port: {spec}"
        ));
    }
    Ok((start..=end).map(|p| format!("{p}/{proto}")).collect())
}

fn reachable(graph: &[Vec<usize>], from: usize) -> BTreeSet<usize> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from];
    while let Some(n) = stack.pop() {
        if seen.insert(n) {
            stack.extend(graph[n].iter().copied());
        }
    }
    seen
}

fn check_cycles(
    df: &Dockerfile,
    graph: &[Vec<usize>],
    nodes: &BTreeSet<usize>,
) -> Result<(), ParseError> {
    // 0 = unvisited, 1 = on the current path, 2 = done.
    fn visit(n: usize, graph: &[Vec<usize>], state: &mut [u8]) -> Option<usize> {
        match state[n] {
            1 => return Some(n),
            2 => return None,
            _ => {}
        }
        state[n] = 1;
        for &d in &graph[n] {
            if let Some(c) = visit(d, graph, state) {
                return Some(c);
            }
        }
        state[n] = 2;
        None
    }
    let mut state = vec![0u8; graph.len()];
    for &n in nodes {
        if let Some(c) = visit(n, graph, &mut state) {
            let stage = &df.stages[c];
            let name = stage.name.clone().unwrap_or_else(|| c.to_string());
            return Err(ParseError::new(
                stage.line,
                format!("circular dependency detected on stage: {name}"),
            ));
        }
    }
    Ok(())
}

/// Dependencies first; among ready stages the lowest index first.
fn topo_order(graph: &[Vec<usize>], nodes: &BTreeSet<usize>) -> Vec<usize> {
    let mut done = BTreeSet::new();
    let mut order = Vec::with_capacity(nodes.len());
    while order.len() < nodes.len() {
        let next = nodes
            .iter()
            .copied()
            .find(|n| !done.contains(n) && graph[*n].iter().all(|d| done.contains(d)));
        match next {
            Some(n) => {
                done.insert(n);
                order.push(n);
            }
            // Only possible with a cycle, which check_cycles already refused.
            None => break,
        }
    }
    order
}

fn unused_build_args(df: &Dockerfile, opts: &ResolveOptions) -> Vec<String> {
    let mut declared = BTreeSet::new();
    let all = df
        .global_args
        .iter()
        .chain(df.stages.iter().flat_map(|s| s.instructions.iter()));
    for node in all {
        if let Instruction::Arg(decls) = &node.instruction {
            declared.extend(decls.iter().map(|d| d.name.clone()));
        }
    }
    opts.build_args
        .keys()
        .filter(|k| !declared.contains(*k) && !PREDEFINED_ARGS.contains(&k.as_str()))
        .cloned()
        .collect()
}
