//! Executes one stage: FROM, then each instruction in order, tracking the
//! image config, layers and the chain of cache keys.
use super::fetch::{download, is_url};
use super::history::{entry, go_list, go_quote, go_quote_rune, go_quoted_list, json_list};
use super::plan::StepPlan;
use super::step_key::{self, CopyInputs, RunInputs, SourceInput, StepKey};
use super::{BuildCtx, StageResult};
use crate::digest::KeyHasher;
use crate::dockerfile::{
    self, CommandForm, FileSpec, Healthcheck, Instruction, Mount, MountType, NetworkMode,
    ResolvedNode, Source,
};
use crate::exec::copy::{
    copy_tree, destination_for, hash_selected, make_parents, select, write_file, CopyOptions,
    Selected,
};
use crate::exec::glob::{Excludes, Filter};
use crate::exec::run::{MountSource, RunMount, RunRequest};
use crate::exec::user::resolve_user;
use crate::fsutil::resolve_in_root;
use crate::image::{Healthcheck as ImgHealth, ImageConfig};
use crate::layer::{self, UnpackMode};
use crate::progress::EventKind;
use crate::snapshot::{adopt_upper, ensure_layer, OverlayMount};
use crate::store::{CacheEntry, CachedLayer};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

const DEFAULT_SHELL: [&str; 2] = ["/bin/sh", "-c"];

pub(super) struct StageExec<'c, 'a> {
    ctx: &'c BuildCtx<'a>,
    index: usize,
    name: String,
    context: PathBuf,
    config: ImageConfig,
    layers: Vec<CachedLayer>,
    key: String,
    /// ARGs declared in this stage, in declaration order (None = declared
    /// without value): `RUN |N a=b` lists them all, as BuildKit does.
    arg_decls: Vec<(String, Option<String>)>,
    /// BuildKit's state environment: the image's Env plus every ARG with a
    /// value, the later of an ENV and an ARG of the same name winning. RUN
    /// steps get it (dockerfile2llb's dispatchArg adds ARG values to the
    /// state's env, dispatchEnv too); the frontend expanded words the same way.
    state_env: Vec<String>,
    cmd_set: bool,
    /// Some earlier step of this stage ran instead of coming from the cache.
    dirty: bool,
    /// `created` of the last filesystem step (history timestamps).
    last_created: Option<String>,
    step: u32,
    /// Planning only: why `key` is not known yet (a base image not in the
    /// store, a step whose inputs exist only once the build runs). A build
    /// always knows its keys.
    pending: Option<String>,
    /// Planning only: the first step whose layer is not in the store, so
    /// `layers` are not this stage's filesystem (a `COPY --from` of it
    /// cannot be hashed before the build runs).
    unbuilt: Option<String>,
    /// Planning only: what `build --print` shows of each step, FROM first.
    steps: Vec<StepPlan>,
    /// Planning only: the base image is not in the store, so neither is
    /// its config (Env, USER, WORKDIR…), part of later steps' inputs.
    config_unknown: bool,
}

/// Builds stage `index` (waiting for the stages it depends on).
pub(super) fn run_stage(ctx: &BuildCtx<'_>, index: usize, context: &Path) -> Result<StageResult> {
    let stage = &ctx.dockerfile.stages[index];
    let name = stage
        .name
        .clone()
        .unwrap_or_else(|| format!("stage-{index}"));
    let mut ex = StageExec {
        ctx,
        index,
        name,
        context: context.to_path_buf(),
        config: ImageConfig::default(),
        layers: Vec::new(),
        key: String::new(),
        arg_decls: Vec::new(),
        state_env: Vec::new(),
        cmd_set: false,
        dirty: false,
        last_created: None,
        step: ctx.step_base[index],
        pending: None,
        unbuilt: None,
        steps: Vec::new(),
        config_unknown: false,
    };
    ex.from(&stage.original)?;
    ex.state_env = ex.config.config.env.clone();
    // The frontend's plan has every word expanded once, the base's ONBUILD
    // triggers first (parsed and expanded like the stage's own lines): the
    // engine only executes it. The base's triggers are consumed.
    ex.config.config.on_build.clear();
    let planned = ctx
        .plan
        .stage(index)
        .with_context(|| format!("stage {index} is not in the build plan"))?;
    for node in &planned.instructions {
        ex.step += 1;
        let started = Instant::now();
        ex.ctx.emit(
            EventKind::Started,
            &ex.name,
            ex.step,
            &node.original,
            String::new(),
        );
        let recorded = ex.steps.len();
        ex.instruction(node)
            .with_context(|| format!("line {}: {}", node.line, node.original))?;
        if ctx.planning && ex.steps.len() == recorded {
            ex.steps.push(StepPlan::metadata(ex.step));
        }
        let _ = started;
    }
    let mut config = ex.config;
    config.created = ex.last_created;
    Ok(StageResult {
        config,
        layers: ex.layers,
        key: ex.key,
        pending: ex.pending,
        unbuilt: ex.unbuilt,
        steps: ex.steps,
        config_unknown: ex.config_unknown,
    })
}

impl StageExec<'_, '_> {
    fn lookup_map(&self) -> BTreeMap<String, String> {
        self.state_env
            .iter()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Sets `key` in the state environment (in place, keeping order).
    fn state_env_set(&mut self, key: &str, value: &str) {
        let entry = format!("{key}={value}");
        match self
            .state_env
            .iter_mut()
            .find(|kv| kv.split('=').next() == Some(key))
        {
            Some(slot) => *slot = entry,
            None => self.state_env.push(entry),
        }
    }

    /// Adds a history entry. A layer step has its layer's time (from the
    /// cache entry, so unchanged Dockerfiles rebuild to identical images);
    /// a metadata step has none yet and gets one when the image is
    /// committed, as BuildKit's exporter gives it ([`super::history::fill_created`]).
    fn history(&mut self, created_by: String, empty_layer: bool) {
        let mut h = entry(created_by, empty_layer, self.ctx.opts.epoch);
        if empty_layer && self.ctx.opts.epoch.is_none() {
            h.created = None;
        } else {
            h.created = self.last_created.clone().or(h.created);
        }
        self.config.history.push(h);
    }

    /// Tells the progress display the current step is done.
    fn step_completed(&self) {
        self.ctx.emit(
            EventKind::Completed,
            &self.name,
            self.step,
            "",
            String::new(),
        );
    }

    fn metadata_done(&mut self, created_by: String) {
        self.history(created_by, true);
        self.step_completed();
    }

    // ---- FROM ----

    fn from(&mut self, original: &str) -> Result<()> {
        self.step += 1;
        self.ctx.emit(
            EventKind::Started,
            &self.name,
            self.step,
            original,
            String::new(),
        );
        let base = self.ctx.bases[self.index].clone();
        let platform = self.ctx.platform.clone();
        // What the base is was decided once, by the frontend: stage names
        // match exactly (`FROM MIDDLE` is an image reference, an invalid
        // one), `scratch` is the empty image.
        let planned = self
            .ctx
            .plan
            .stage(self.index)
            .with_context(|| format!("stage {} is not in the build plan", self.index))?
            .base
            .clone();
        if planned == dockerfile::Base::Scratch {
            let key = step_key::scratch(&platform);
            self.key = key.digest.clone();
            self.record(StepPlan::keyed(self.step, "base", key, true, None));
            // BuildKit's empty image has WorkingDir "/" (and the default PATH).
            self.config.config.working_dir = "/".into();
        } else if let dockerfile::Base::Stage(dep) = planned {
            let r = self.ctx.wait_stage(dep)?;
            self.config = r.config.clone();
            self.layers = r.layers.clone();
            self.key = r.key.clone();
            self.last_created = r.config.created.clone();
            self.pending = r.pending.clone();
            self.unbuilt = r.unbuilt.clone();
            self.config_unknown = r.config_unknown;
            let mut inputs = serde_json::Map::new();
            inputs.insert("stage".into(), serde_json::json!(dep));
            let from = StepPlan {
                step: self.step,
                kind: "base",
                cache_key: r.pending.is_none().then(|| r.key.clone()),
                key_inputs: Some(inputs),
                cached: r.pending.is_none().then_some(r.unbuilt.is_none()),
                pending: r.pending.clone(),
                miss_reason: r.unbuilt.clone(),
            };
            self.record(from);
        } else {
            if let Some(why) = self.image_unknown(&base) {
                let why =
                    format!("base image {why}: its digest is part of every key of this stage");
                self.record(StepPlan::pending(self.step, "base", why.clone(), None));
                self.pending = Some(why.clone());
                self.unbuilt = Some(why);
                self.config_unknown = true;
                self.config.created = None;
                return Ok(());
            }
            let img = self.ctx.store.resolve(&base).with_context(|| {
                format!("base image {base:?} is not in the store (berth builds offline: build or load it first)")
            })?;
            let diff_ids = &img.config.rootfs.diff_ids;
            if diff_ids.len() != img.manifest.layers.len() {
                bail!(
                    "image {base}: {} layers but {} diff_ids",
                    img.manifest.layers.len(),
                    diff_ids.len()
                );
            }
            self.layers = img
                .manifest
                .layers
                .iter()
                .zip(diff_ids)
                .map(|(d, id)| CachedLayer {
                    descriptor: d.clone(),
                    diff_id: id.clone(),
                })
                .collect();
            let key = step_key::image(&img.descriptor.digest, &platform);
            self.key = key.digest.clone();
            self.record(StepPlan::keyed(self.step, "base", key, true, None));
            self.last_created = img.config.created.clone();
            self.config = img.config;
            self.ctx.emit(
                EventKind::Info,
                &self.name,
                self.step,
                "",
                format!("base image {base} is {}", img.descriptor.digest),
            );
        }
        // A stage never inherits the base's creation time or triggers' origin.
        self.config.created = None;
        self.step_completed();
        Ok(())
    }

    // ---- instructions ----

    fn instruction(&mut self, node: &ResolvedNode) -> Result<()> {
        match &node.instruction {
            Instruction::Env(kvs) => {
                let mut set = Vec::new();
                for kv in kvs {
                    // All values see the environment from before the instruction.
                    set.push((kv.key.clone(), kv.value.clone()));
                }
                let mut parts = Vec::new();
                for (k, v) in set {
                    self.config.config.env_set(&k, &v);
                    self.state_env_set(&k, &v);
                    parts.push(format!("{k}={v}"));
                }
                self.metadata_done(format!("ENV {}", parts.join(" ")));
            }
            Instruction::Arg(decls) => {
                let mut parts = Vec::new();
                for d in decls {
                    // Resolved: the value in effect (build arg, else the
                    // expanded default, else the global ARG's value).
                    let value = d.default.clone();
                    parts.push(match &value {
                        Some(v) => format!("{}={v}", d.name),
                        None => d.name.clone(),
                    });
                    if let Some(v) = &value {
                        self.state_env_set(&d.name, v);
                    }
                    self.arg_decls.push((d.name.clone(), value));
                }
                self.metadata_done(format!("ARG {}", parts.join(" ")));
            }
            Instruction::Label(kvs) => {
                let mut parts = Vec::new();
                for kv in kvs {
                    let (k, v) = (kv.key.clone(), kv.value.clone());
                    parts.push(format!("{k}={v}"));
                    self.config.config.labels.insert(k, v);
                }
                self.metadata_done(format!("LABEL {}", parts.join(" ")));
            }
            Instruction::Expose(ports) => {
                // A range is one port per number, as BuildKit's
                // nat.ParsePortSpecs; history shows this instruction's ports
                // as the Go map it prints (sorted, deduplicated).
                let mut added = std::collections::BTreeSet::new();
                // Resolved: one normalized `port/proto` per port.
                added.extend(ports.iter().cloned());
                for p in &added {
                    self.config
                        .config
                        .exposed_ports
                        .insert(p.clone(), serde_json::json!({}));
                }
                let shown: Vec<String> = added.iter().map(|p| format!("{p}:{{}}")).collect();
                self.metadata_done(format!("EXPOSE map[{}]", shown.join(" ")));
            }
            Instruction::Volume(vols) => {
                let mut added = Vec::new();
                for v in vols {
                    let v = v.clone();
                    if v.trim().is_empty() {
                        bail!("VOLUME specified can not be an empty string");
                    }
                    self.config
                        .config
                        .volumes
                        .insert(v.clone(), serde_json::json!({}));
                    added.push(v);
                }
                self.metadata_done(format!("VOLUME {}", go_list(&added)));
            }
            Instruction::User(u) => {
                let u = u.clone();
                self.config.config.user = u.clone();
                self.metadata_done(format!("USER {u}"));
            }
            Instruction::Workdir(w) => self.workdir(w, &node.original)?,
            Instruction::Entrypoint(form) => {
                let v = self.command_vec(form);
                self.config.config.entrypoint = Some(v.clone());
                if !self.cmd_set {
                    // An ENTRYPOINT resets the CMD inherited from the base.
                    self.config.config.cmd = None;
                }
                self.metadata_done(format!("ENTRYPOINT {}", go_quoted_list(&v)));
            }
            Instruction::Cmd(form) => {
                let v = self.command_vec(form);
                self.config.config.cmd = Some(v.clone());
                // BuildKit sets ArgsEscaped on every CMD (not on ENTRYPOINT).
                self.config.config.args_escaped = true;
                self.cmd_set = true;
                self.metadata_done(format!("CMD {}", go_quoted_list(&v)));
            }
            Instruction::Shell(v) => {
                self.config.config.shell = v.clone();
                self.metadata_done(format!("SHELL {}", go_list(v)));
            }
            Instruction::StopSignal(s) => {
                let s = s.clone();
                self.config.config.stop_signal = s.clone();
                self.metadata_done(format!("STOPSIGNAL {s}"));
            }
            Instruction::Healthcheck(h) => {
                let hc = match h {
                    Healthcheck::None => ImgHealth {
                        test: vec!["NONE".into()],
                        ..Default::default()
                    },
                    Healthcheck::Check(c) => ImgHealth {
                        test: c.test(),
                        interval: c.interval.map(|d| d.as_nanos() as i64).unwrap_or(0),
                        timeout: c.timeout.map(|d| d.as_nanos() as i64).unwrap_or(0),
                        start_period: c.start_period.map(|d| d.as_nanos() as i64).unwrap_or(0),
                        start_interval: c.start_interval.map(|d| d.as_nanos() as i64).unwrap_or(0),
                        retries: c.retries.map(i64::from).unwrap_or(0),
                    },
                };
                // BuildKit's `HEALTHCHECK %q` of its HealthConfig struct:
                // quoted test list and durations, retries as a quoted rune.
                // StartInterval is a later field; shown only when set.
                let mut durations = vec![hc.interval, hc.timeout, hc.start_period];
                if hc.start_interval != 0 {
                    durations.push(hc.start_interval);
                }
                let durations: Vec<String> = durations
                    .into_iter()
                    .map(|d| go_quote(&go_duration(d)))
                    .collect();
                let shown = format!(
                    "HEALTHCHECK &{{{} {} {}}}",
                    go_quoted_list(&hc.test),
                    durations.join(" "),
                    go_quote_rune(hc.retries)
                );
                self.config.config.healthcheck = Some(hc);
                self.metadata_done(shown);
            }
            Instruction::OnBuild(o) => {
                // BuildKit records the trigger in the config but writes no
                // history entry for it.
                self.config.config.on_build.push(o.expression.clone());
                self.step_completed();
            }
            Instruction::Maintainer(m) => {
                // Not expanded, as BuildKit's MAINTAINER.
                self.config.author = Some(m.clone());
                self.metadata_done(format!("MAINTAINER {m}"));
            }
            Instruction::Run(r) => self.run(r, &node.original, &node.build_args)?,
            Instruction::Copy(c) => self.copy(&c.files, c.from.as_deref(), None, &node.original)?,
            Instruction::Add(a) => {
                self.copy(&a.files, None, Some(a.checksum.as_deref()), &node.original)?
            }
        }
        Ok(())
    }

    fn shell(&self) -> Vec<String> {
        if self.config.config.shell.is_empty() {
            DEFAULT_SHELL.iter().map(|s| s.to_string()).collect()
        } else {
            self.config.config.shell.clone()
        }
    }

    fn command_vec(&self, form: &CommandForm) -> Vec<String> {
        match form {
            CommandForm::Exec(v) => v.clone(),
            CommandForm::Shell(s) => {
                let mut v = self.shell();
                v.push(s.clone());
                v
            }
        }
    }

    fn workdir_abs(&self, path: &str) -> String {
        let base = if self.config.config.working_dir.is_empty() {
            "/"
        } else {
            &self.config.config.working_dir
        };
        let joined = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("{base}/{path}")
        };
        clean_abs(&joined)
    }

    fn workdir(&mut self, raw: &str, original: &str) -> Result<()> {
        let path = raw.to_string();
        // As BuildKit: an absolute path is kept as written (config and
        // history), a relative one is joined to the current directory.
        let shown = if path.starts_with('/') {
            path.clone()
        } else {
            self.workdir_abs(&path)
        };
        let dir = self.workdir_abs(&path);
        self.config.config.working_dir = shown.clone();
        let user = self.config.config.user.clone();
        let key = step_key::workdir(&dir, &user);
        let mut memo = BTreeMap::new();
        memo.insert("path".to_string(), dir.clone());
        memo.insert("user".to_string(), user.clone());
        let created_by = format!("WORKDIR {shown}");
        self.fs_step(key, memo, false, created_by, original, |_, merged, _| {
            let target = resolve_in_root(merged, &dir)?;
            if !target.is_dir() {
                // Directories WORKDIR creates, parents included, belong to
                // the current USER (BuildKit's mkdir with the user's chown),
                // so `USER app` + `WORKDIR /home/app/work` is writable.
                let owner = if user.is_empty() {
                    None
                } else {
                    let u = resolve_user(merged, &user)?;
                    Some((u.uid, u.gid))
                };
                make_parents(merged, &target.join("x"), owner)?;
            }
            Ok(())
        })
    }

    /// Runs a filesystem-changing step through the cache.
    #[allow(clippy::too_many_arguments)]
    fn fs_step(
        &mut self,
        key: StepKey,
        memo: BTreeMap<String, String>,
        link: bool,
        created_by: String,
        original: &str,
        op: impl FnOnce(&mut Self, &Path, &Path) -> Result<()>,
    ) -> Result<()> {
        let started = Instant::now();
        if let (Some(why), false) = (&self.pending, link) {
            // Planning only (a build knows every parent key): this key
            // chains on a parent key nobody knows yet.
            let why = why.clone();
            let inputs =
                (!self.config_unknown).then(|| key.inputs_without_parent(link, &self.ctx.platform));
            self.record(StepPlan::pending(self.step, "layer", why, inputs));
            return Ok(());
        }
        let planned_key = key.finish_layer(link, &self.ctx.platform, &self.key);
        let key = planned_key.digest.clone();
        let memo_key = KeyHasher::new("memo")
            .str(&self.ctx.dockerfile_path.to_string_lossy())
            .str(&self.context.to_string_lossy())
            .str(&self.index.to_string())
            .str(&self.step.to_string())
            .clone()
            .finish();
        let store = self.ctx.store;
        if self.ctx.planning {
            // What the build would do, without doing it: look the key up;
            // on a miss, later keys still chain on this one (keys do not
            // depend on what a step produces).
            let hit = store.cache_get(&key);
            let reason = match &hit {
                Some(hit) => {
                    self.apply_entry(hit, created_by);
                    None
                }
                None => {
                    let reason = self.miss_reason(&memo_key, &memo, original);
                    self.dirty = true;
                    if self.unbuilt.is_none() {
                        self.unbuilt = Some(format!(
                            "step {} ({original}) is not cached: its layer exists once the build runs it",
                            self.step
                        ));
                    }
                    Some(reason)
                }
            };
            let cached = hit.is_some();
            self.record(StepPlan::keyed(
                self.step,
                "layer",
                planned_key,
                cached,
                reason,
            ));
            self.key = key;
            self.pending = None;
            return Ok(());
        }
        if !self.ctx.opts.no_cache {
            if let Some(hit) = store.cache_get(&key) {
                self.apply_entry(&hit, created_by);
                self.key = key;
                self.ctx
                    .emit(EventKind::Cached, &self.name, self.step, "", String::new());
                return Ok(());
            }
        }
        let reason = self.miss_reason(&memo_key, &memo, original);
        let mut mount =
            OverlayMount::new(store, &if link { Vec::new() } else { self.lower_dirs()? })?;
        op(self, &mount.merged, &mount.upper)?;
        mount.unmount()?;
        let created = super::history::timestamp(self.ctx.opts.epoch);
        // Every filesystem step (RUN, COPY, ADD, WORKDIR) is a layer, even
        // when it changed nothing: BuildKit records an empty layer then,
        // and history (empty_layer) and layer count must be the same.
        let entry = {
            let info = layer::write_layer(
                store,
                &mount.upper,
                self.ctx.opts.compression,
                self.ctx.opts.epoch,
            )?;
            adopt_upper(store, &mount.upper, &info.diff_id)?;
            CacheEntry {
                layer: Some(CachedLayer {
                    descriptor: info.descriptor,
                    diff_id: info.diff_id,
                }),
                created,
            }
        };
        store.cache_put(&key, &entry)?;
        let mut full_memo = memo;
        full_memo.insert("#parent".into(), self.key.clone());
        full_memo.insert("#instruction".into(), original.to_string());
        store.memo_put(&memo_key, &full_memo)?;
        self.apply_entry(&entry, created_by);
        self.key = key;
        self.dirty = true;
        let mut e = crate::progress::Event::new(EventKind::Completed);
        e.stage = self.name.clone();
        e.step = self.step;
        e.message = reason;
        e.seconds = started.elapsed().as_secs_f64();
        self.ctx.progress.event(e);
        Ok(())
    }

    /// Explains why a step is not in the cache by comparing its inputs with
    /// what the same step had last time.
    fn miss_reason(
        &self,
        memo_key: &str,
        memo: &BTreeMap<String, String>,
        original: &str,
    ) -> String {
        let kw = original
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        if self.ctx.opts.no_cache {
            return format!("cache miss: {kw}: --no-cache");
        }
        if self.dirty {
            return format!("cache miss: {kw}: parent step changed");
        }
        let Some(old) = self.ctx.store.memo_get(memo_key) else {
            return format!("cache miss: {original}: no cache entry");
        };
        if old.get("#instruction").map(String::as_str) != Some(original) {
            return format!("cache miss: {original}: instruction changed");
        }
        if old.get("#parent") != Some(&self.key) {
            return format!("cache miss: {kw}: parent step changed");
        }
        for (k, v) in memo {
            match old.get(k) {
                Some(o) if o == v => {}
                Some(_) => {
                    return match k.strip_prefix("file:") {
                        Some(f) => format!("cache miss: {original}: content of {f} changed"),
                        None => format!("cache miss: {original}: {k} changed"),
                    }
                }
                None => {
                    return match k.strip_prefix("file:") {
                        Some(f) => format!("cache miss: {original}: {f} was added"),
                        None => format!("cache miss: {original}: {k} changed"),
                    }
                }
            }
        }
        if let Some(k) = old
            .keys()
            .find(|k| !k.starts_with('#') && !memo.contains_key(*k))
        {
            return match k.strip_prefix("file:") {
                Some(f) => format!("cache miss: {original}: {f} was removed"),
                None => format!("cache miss: {original}: {k} changed"),
            };
        }
        format!("cache miss: {original}: no cache entry")
    }

    fn apply_entry(&mut self, e: &CacheEntry, created_by: String) {
        if !e.created.is_empty() {
            self.last_created = Some(e.created.clone());
        }
        match &e.layer {
            Some(l) => {
                self.config.rootfs.diff_ids.push(l.diff_id.clone());
                self.layers.push(l.clone());
                self.history(created_by, false);
            }
            None => self.history(created_by, true),
        }
    }

    /// Snapshot directories of the current layers, bottom first.
    fn lower_dirs(&self) -> Result<Vec<PathBuf>> {
        lower_dirs_of(self.ctx, &self.layers)
    }

    /// Planning: what `build --print` shows of the current step.
    fn record(&mut self, step: StepPlan) {
        if self.ctx.planning {
            self.steps.push(step);
        }
    }

    /// Planning: the current layer step's key needs something that exists
    /// only once the build runs (`why`); later keys chain on it.
    fn step_pending(&mut self, why: String, original: &str) {
        self.record(StepPlan::pending(self.step, "layer", why, None));
        let step = self.step;
        self.pending = Some(format!(
            "depends on the key of step {step} ({original}), known only when the build gets there"
        ));
        if self.unbuilt.is_none() {
            self.unbuilt = Some(format!("step {step} ({original}) has not run"));
        }
    }

    // ---- RUN ----

    fn run(
        &mut self,
        r: &dockerfile::Run,
        original: &str,
        build_args: &[(String, String)],
    ) -> Result<()> {
        if r.security == Some(dockerfile::SecurityMode::Insecure) {
            bail!("RUN --security=insecure is not allowed by berth");
        }
        // A shebang heredoc is a file the shell runs (see RunScript::File).
        let mut pipe: Option<(String, String)> = None;
        let args = match &r.command {
            CommandForm::Exec(v) => v.clone(),
            CommandForm::Shell(s) => {
                let mut v = self.shell();
                match dockerfile::run_script(s, &r.heredocs) {
                    dockerfile::RunScript::Inline(script) => v.push(script),
                    dockerfile::RunScript::File { name, data } => {
                        v.push(format!("{}/{name}", dockerfile::PIPES_DIR));
                        pipe = Some((name, data));
                    }
                }
                v
            }
        };
        let mut env = self.state_env.clone();
        // Proxy build args (HTTP_PROXY & co) reach RUN without an ARG, as
        // in BuildKit, but stay out of the cache key and the history.
        let proxies: Vec<String> = build_args
            .iter()
            .filter(|(k, _)| dockerfile::PREDEFINED_ARGS.contains(&k.as_str()))
            .filter(|(k, _)| !env.iter().any(|kv| kv.split('=').next() == Some(k)))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        // BuildKit's runCommandString: every declared ARG in order, with
        // its value in the state env (an ENV may have replaced it), else
        // its own value, else empty.
        let state = self.lookup_map();
        let arg_pairs: Vec<String> = self
            .arg_decls
            .iter()
            .map(|(k, v)| {
                let v = state
                    .get(k)
                    .cloned()
                    .or_else(|| v.clone())
                    .unwrap_or_default();
                format!("{k}={v}")
            })
            .collect();
        let network_host = match r.network {
            Some(NetworkMode::Host) => true,
            Some(NetworkMode::None) => false,
            _ => self.ctx.opts.network_host,
        };
        let mut mounts = Vec::new();
        for m in &r.mounts {
            mounts.push(m.clone());
        }
        let user = self.config.config.user.clone();
        let cwd = if self.config.config.working_dir.is_empty() {
            "/".to_string()
        } else {
            self.config.config.working_dir.clone()
        };
        let mut mounts_desc = format!("{mounts:?}");
        if let Some((name, data)) = &pipe {
            // The file's content is part of what the step runs.
            mounts_desc.push_str(&format!(" {}/{name}={data:?}", dockerfile::PIPES_DIR));
        }
        let mut mount_sources = Vec::new();
        for m in &mounts {
            // A bind mount from another stage depends on that stage's content.
            if let Some(from) = &m.from {
                match self.mount_source_key(from)? {
                    Ok(k) => mount_sources.push((from.clone(), k)),
                    Err(why) => {
                        self.step_pending(why, original);
                        return Ok(());
                    }
                }
            }
        }
        let key = step_key::run(&RunInputs {
            args: &args,
            env: &env,
            user: &user,
            cwd: &cwd,
            mounts: &mounts_desc,
            network_host,
            mount_sources: &mount_sources,
        });
        let mut memo = BTreeMap::new();
        memo.insert("command".to_string(), json_list(&args));
        memo.insert("environment".to_string(), env.join("\n"));
        memo.insert("user".to_string(), user.clone());
        memo.insert("workdir".to_string(), cwd.clone());
        memo.insert("mounts".to_string(), mounts_desc);
        memo.insert("network".to_string(), network_host.to_string());
        let prefix = if arg_pairs.is_empty() {
            String::new()
        } else {
            format!("|{} {} ", arg_pairs.len(), arg_pairs.join(" "))
        };
        let created_by = format!("RUN {prefix}{} # buildkit", args.join(" "));
        self.fs_step(
            key,
            memo,
            false,
            created_by,
            original,
            move |ex, merged, _| {
                let resolved = resolve_user(merged, &user)?;
                if !env.iter().any(|kv| kv.starts_with("HOME=")) {
                    env.push(format!("HOME={}", resolved.home));
                }
                let cwd_host = resolve_in_root(merged, &cwd)?;
                if !cwd_host.exists() {
                    make_parents(merged, &cwd_host.join("x"), None)?;
                }
                let work = ex.ctx.store.temp_dir("run-")?;
                let mut keep: Vec<OverlayMount> = Vec::new();
                let mut run_mounts = Vec::new();
                for m in &mounts {
                    run_mounts.push(ex.prepare_mount(m, work.path(), &mut keep, &mut env)?);
                }
                let mut run_mounts: Vec<RunMount> = run_mounts.into_iter().flatten().collect();
                if let Some((name, data)) = &pipe {
                    run_mounts.push(pipe_mount(work.path(), name, data)?);
                }
                env.extend(proxies);
                let req = RunRequest {
                    args: args.clone(),
                    env: env.clone(),
                    user: resolved,
                    cwd: cwd.clone(),
                    network_host,
                    mounts: run_mounts,
                };
                let bundle = work.path().join("bundle");
                std::fs::create_dir(&bundle).context("creating bundle dir")?;
                let (name, step, progress) = (ex.name.clone(), ex.step, ex.ctx.progress);
                let mut on_line = |line: &str| {
                    let mut e = crate::progress::Event::new(EventKind::Log);
                    e.stage = name.clone();
                    e.step = step;
                    e.message = line.to_string();
                    progress.event(e);
                };
                ex.ctx
                    .opts
                    .runtime
                    .run(merged, &bundle, &req, &mut on_line)?;
                drop(keep);
                Ok(())
            },
        )
    }

    /// The key a `--mount=from=` source contributes: the stage's key or the
    /// image's digest. Planning, the inner `Err` says why it is not known.
    fn mount_source_key(&self, from: &str) -> Result<Result<String, String>> {
        if let Some(dep) = self.ctx.stage_ref(from, self.index) {
            let r = self.ctx.wait_stage(dep)?;
            return Ok(match &r.pending {
                Some(why) => Err(format!(
                    "mounts stage {from}, whose key is not known yet: {why}"
                )),
                None => Ok(r.key.clone()),
            });
        }
        if let Some(why) = self.image_unknown(from) {
            return Ok(Err(format!("mounts image {why}")));
        }
        Ok(Ok(self.ctx.store.resolve(from)?.descriptor.digest))
    }

    /// Planning: why the digest a build will find for `image` is not known
    /// now — it is not in the store (a build pulls it), or `--pull` has the
    /// build resolve it in its registry again (unless pinned by digest).
    /// `None` when building, or when the store's image is the one.
    fn image_unknown(&self, image: &str) -> Option<String> {
        if !self.ctx.planning {
            return None;
        }
        if self.ctx.store.resolve(image).is_err() {
            return Some(format!(
                "{image}, which is not in the store (a build pulls it first)"
            ));
        }
        (self.ctx.opts.pull && !image.contains('@'))
            .then(|| format!("{image}, which --pull has a build resolve in its registry first"))
    }

    /// Planning: why a COPY/ADD's sources can't be hashed before the build
    /// runs — a URL not downloaded yet, or a `--from` source whose files
    /// don't exist yet. `None` when they can.
    fn unknown_sources(&self, spec: &FileSpec, from: Option<&str>) -> Result<Option<String>> {
        for s in &spec.sources {
            if let Source::Path(p) = s {
                if is_url(p) {
                    return Ok(Some(format!(
                        "its key covers the content of {p}, known once the build downloads it"
                    )));
                }
            }
        }
        let Some(from) = from else {
            return Ok(None);
        };
        if let Some(dep) = self.ctx.stage_ref(from, self.index) {
            let r = self.ctx.wait_stage(dep)?;
            return Ok(r.unbuilt.as_ref().map(|why| {
                format!(
                    "its key covers the files it copies from stage {from}, \
                     which exist only after the build runs it: {why}"
                )
            }));
        }
        Ok(self
            .image_unknown(from)
            .map(|why| format!("copies from image {why}")))
    }

    /// Layers of a `from=` source (stage or store image).
    fn layers_of_source(&self, from: &str) -> Result<Vec<CachedLayer>> {
        if let Some(dep) = self.ctx.stage_ref(from, self.index) {
            return Ok(self.ctx.wait_stage(dep)?.layers.clone());
        }
        let img =
            self.ctx.store.resolve(from).with_context(|| {
                format!("{from:?} is neither a stage nor an image in the store")
            })?;
        Ok(img
            .manifest
            .layers
            .iter()
            .zip(&img.config.rootfs.diff_ids)
            .map(|(d, id)| CachedLayer {
                descriptor: d.clone(),
                diff_id: id.clone(),
            })
            .collect())
    }

    fn prepare_mount(
        &self,
        m: &Mount,
        work: &Path,
        keep: &mut Vec<OverlayMount>,
        env: &mut Vec<String>,
    ) -> Result<Option<RunMount>> {
        let target = m.target.clone().map(|t| self.workdir_abs(&t));
        match m.kind {
            MountType::Bind => {
                let target = target.context("bind mount needs a target")?;
                let root = match &m.from {
                    Some(from) => {
                        let lowers = lower_dirs_of(self.ctx, &self.layers_of_source(from)?)?;
                        let ov = OverlayMount::new(self.ctx.store, &lowers)?;
                        let p = ov.merged.clone();
                        keep.push(ov);
                        p
                    }
                    None => self.context.clone(),
                };
                // Resolved inside `root` by fd when the step starts.
                Ok(Some(RunMount {
                    target,
                    source: MountSource::Bind {
                        root,
                        path: PathBuf::from(m.source.as_deref().unwrap_or("/")),
                        readonly: m.readonly,
                    },
                }))
            }
            MountType::Cache => {
                let target = target.context("cache mount needs a target")?;
                let id = m.id.clone().unwrap_or_else(|| target.clone());
                let dir = self
                    .ctx
                    .store
                    .root()
                    .join("cache-mounts")
                    .join(&KeyHasher::new("cache-mount").str(&id).clone().finish()[7..]);
                if !dir.exists() {
                    std::fs::create_dir_all(&dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                    std::os::unix::fs::chown(
                        &dir,
                        Some(m.uid.unwrap_or(0)),
                        Some(m.gid.unwrap_or(0)),
                    )?;
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(
                        &dir,
                        std::fs::Permissions::from_mode(m.mode.unwrap_or(0o755)),
                    )?;
                }
                Ok(Some(RunMount {
                    target,
                    source: MountSource::Cache {
                        dir,
                        readonly: m.readonly,
                    },
                }))
            }
            MountType::Tmpfs => {
                let target = target.context("tmpfs mount needs a target")?;
                Ok(Some(RunMount {
                    target,
                    source: MountSource::Tmpfs { size: m.size },
                }))
            }
            MountType::Secret => {
                let id = m.id.clone().or_else(|| {
                    m.target
                        .as_ref()
                        .and_then(|t| t.rsplit('/').next().map(String::from))
                });
                let id = id.context("secret mount needs an id or a target")?;
                let Some(src) = self.ctx.opts.secrets.get(&id) else {
                    if m.required {
                        bail!("secret {id} is required but was not provided (--secret id={id},src=PATH)");
                    }
                    return Ok(None);
                };
                // At most 500 KiB, as BuildKit: never the whole of a huge file.
                let data = super::secret::read(&id, src)?;
                if let Some(var) = &m.env {
                    let value = String::from_utf8(data.clone())
                        .with_context(|| format!("secret {id} is not UTF-8 text"))?;
                    env.push(format!("{var}={}", value.trim_end_matches('\n')));
                    if m.target.is_none() {
                        return Ok(None);
                    }
                }
                // Copy the secret so its mode/owner can be set without touching the source.
                let copy = work.join(format!(
                    "secret-{}",
                    &KeyHasher::new("s").str(&id).clone().finish()[7..19]
                ));
                std::fs::write(&copy, &data).with_context(|| format!("copying secret {id}"))?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(
                    &copy,
                    std::fs::Permissions::from_mode(m.mode.unwrap_or(0o400)),
                )?;
                std::os::unix::fs::chown(
                    &copy,
                    Some(m.uid.unwrap_or(0)),
                    Some(m.gid.unwrap_or(0)),
                )?;
                let target = target.unwrap_or_else(|| format!("/run/secrets/{id}"));
                Ok(Some(RunMount {
                    target,
                    source: MountSource::Bind {
                        root: work.to_path_buf(),
                        path: PathBuf::from(copy.file_name().context("secret copy name")?),
                        readonly: true,
                    },
                }))
            }
            MountType::Ssh => {
                if m.required {
                    bail!("RUN --mount=type=ssh is not supported by berth");
                }
                Ok(None)
            }
        }
    }

    // ---- COPY / ADD ----

    fn copy(
        &mut self,
        spec: &FileSpec,
        from: Option<&str>,
        add: Option<Option<&str>>,
        original: &str,
    ) -> Result<()> {
        let is_add = add.is_some();
        if spec.parents {
            bail!("--parents is not supported by berth yet");
        }
        let checksum = add.flatten().map(str::to_string);
        let kw = if is_add { "ADD" } else { "COPY" };
        let from = from.map(str::to_string);
        let raw_dest = spec.dest.clone();
        let dest = {
            let abs = self.workdir_abs(&raw_dest);
            if (raw_dest.ends_with('/') || raw_dest.ends_with("/.") || raw_dest == ".")
                && abs != "/"
            {
                format!("{abs}/")
            } else {
                abs
            }
        };
        let chown = spec.chown.clone();
        let chmod = spec.chmod_bits().map_err(|e| anyhow!(e))?;
        let excludes: Vec<String> = spec.excludes.clone();

        if self.ctx.planning {
            if let Some(why) = self.unknown_sources(spec, from.as_deref())? {
                self.step_pending(why, original);
                return Ok(());
            }
        }
        // Where path sources come from.
        let mut src_mount: Option<OverlayMount> = None;
        let (src_root, ignore) = match &from {
            Some(f) => {
                let lowers = lower_dirs_of(self.ctx, &self.layers_of_source(f)?)?;
                let ov = OverlayMount::new(self.ctx.store, &lowers)?;
                let root = ov.merged.clone();
                src_mount = Some(ov);
                (root, crate::dockerfile::IgnoreMatcher::default())
            }
            None => (self.context.clone(), self.ctx.ignore.clone()),
        };
        let work = self.ctx.store.temp_dir("copy-")?;
        let mut items: Vec<(Item, Filter)> = Vec::new();
        let mut wildcard = false;
        for (i, s) in spec.sources.iter().enumerate() {
            match s {
                Source::Heredoc(h) => {
                    // Expanded by the frontend unless the delimiter was quoted.
                    let content = h.content.clone();
                    items.push((
                        Item::Data {
                            name: h.name.clone(),
                            data: content.into_bytes(),
                            mode: 0o644,
                        },
                        Filter::default(),
                    ));
                }
                Source::Path(p) => {
                    let p = p.clone();
                    if is_url(&p) {
                        if !is_add {
                            bail!("source can't be a URL for COPY");
                        }
                        let dir = work.path().join(format!("dl{i}"));
                        std::fs::create_dir(&dir)?;
                        let d = download(&p, &dir, checksum.as_deref())?;
                        let data = std::fs::read(&d.path)?;
                        items.push((
                            Item::Data {
                                name: d.file_name,
                                data,
                                mode: 0o600,
                            },
                            Filter::default(),
                        ));
                        continue;
                    }
                    if p.starts_with("git@") || p.ends_with(".git") {
                        bail!("ADD of git repositories is not supported by berth");
                    }
                    wildcard |= crate::exec::copy::has_wildcard(&p);
                    for sel in select(&src_root, &p)? {
                        let filter = Filter {
                            ignore: ignore.clone(),
                            exclude: Excludes::new(&excludes),
                            base: sel.rel.clone(),
                        };
                        if !sel.rel.is_empty() && filter.ignore.is_excluded(&sel.rel, sel.is_dir) {
                            continue;
                        }
                        items.push((Item::Path(sel), filter));
                    }
                }
            }
        }
        if items.is_empty() && !wildcard {
            bail!("{kw}: no source files were specified");
        }
        let multi = spec.sources.len() > 1 || wildcard;
        if multi && !dest.ends_with('/') && items.len() > 1 {
            bail!("When using {kw} with more than one source file, the destination must be a directory and end with a /");
        }
        let mut memo = BTreeMap::new();
        let mut digests = Vec::with_capacity(items.len());
        for (item, filter) in &items {
            match item {
                Item::Data { name, data, .. } => {
                    let h = crate::digest::sha256_of(data);
                    memo.insert(format!("file:{name}"), h.clone());
                    digests.push(h);
                }
                Item::Path(sel) => {
                    let mut files = Vec::new();
                    let h = hash_selected(sel, filter, &mut files)?;
                    if files.len() <= 20_000 {
                        for (f, fh) in files {
                            memo.insert(format!("file:{f}"), fh);
                        }
                    }
                    digests.push(h);
                }
            }
        }
        let sources: Vec<SourceInput<'_>> = items
            .iter()
            .zip(&digests)
            .map(|((item, _), digest)| match item {
                Item::Data { name, mode, .. } => SourceInput::Data {
                    name,
                    digest,
                    mode: *mode,
                },
                Item::Path(sel) => SourceInput::Path {
                    rel: &sel.rel,
                    digest,
                    is_dir: sel.is_dir,
                },
            })
            .collect();
        let key = step_key::copy(
            &sources,
            &CopyInputs {
                add: is_add,
                dest: &dest,
                chown: chown.as_deref().unwrap_or(""),
                chmod,
                excludes: &excludes,
                from: from.as_deref().unwrap_or(""),
                link: spec.link,
            },
        );
        drop(sources);
        memo.insert("destination".into(), dest.clone());
        memo.insert("chown".into(), chown.clone().unwrap_or_default());
        memo.insert("chmod".into(), format!("{chmod:?}"));
        let created_by = format!(
            "{kw} {} {raw_dest} # buildkit",
            super::history::copy_sources(&spec.sources)
        );
        let from_stage = from.is_some();
        let into_dir = items.len() > 1;
        self.fs_step(
            key,
            memo,
            spec.link,
            created_by,
            original,
            move |_, merged, upper| {
                let owner = match &chown {
                    Some(c) => {
                        let u = resolve_user(merged, c)?;
                        Some((u.uid, u.gid))
                    }
                    None if from_stage => None,
                    None => Some((0, 0)),
                };
                for (item, filter) in &items {
                    match item {
                        Item::Data { name, data, mode } => {
                            let sel = Selected {
                                root: PathBuf::new(),
                                path: PathBuf::new(),
                                rel: name.clone(),
                                name: name.clone(),
                                is_dir: false,
                            };
                            let dst = destination_for(merged, &dest, &sel, into_dir)?;
                            write_file(
                                merged,
                                &dst,
                                data,
                                chmod.unwrap_or(*mode),
                                owner.unwrap_or((0, 0)),
                            )?;
                        }
                        Item::Path(sel) => {
                            if is_add && !sel.is_dir {
                                if let Some(reader) = archive_reader(sel)? {
                                    let dir = resolve_in_root(merged, &dest)?;
                                    // Directories made for the extraction get
                                    // --chown, as BuildKit's (contents keep
                                    // the archive's owners).
                                    make_parents(merged, &dir.join("x"), owner)?;
                                    layer::unpack(reader, &dir, UnpackMode::Apply)
                                        .with_context(|| format!("extracting {}", sel.rel))?;
                                    continue;
                                }
                            }
                            let dst = destination_for(merged, &dest, sel, into_dir)?;
                            let opts = CopyOptions {
                                owner,
                                chmod,
                                filter: filter.clone(),
                            };
                            if sel.is_dir && std::fs::symlink_metadata(&dst).is_err() {
                                // A brand-new directory tree: nothing below it in
                                // the lower layers, so it can be written straight
                                // into the upper dir, skipping overlayfs's slow
                                // per-file creates.
                                let rel = dst
                                    .strip_prefix(merged)
                                    .context("destination outside rootfs")?;
                                let upper_dst = upper.join(rel);
                                copy_up_parents(merged, upper, rel, owner)?;
                                copy_tree(upper, sel, &upper_dst, &opts)?;
                            } else {
                                copy_tree(merged, sel, &dst, &opts)?;
                            }
                        }
                    }
                }
                Ok(())
            },
        )?;
        drop(src_mount);
        Ok(())
    }
}

enum Item {
    Path(Selected),
    Data {
        name: String,
        data: Vec<u8>,
        mode: u32,
    },
}

/// Creates the ancestors of `rel` in `upper` as overlayfs copy-up would:
/// existing directories keep their mode, owner and mtime; missing ones are
/// new 0755 directories (owned by `owner`, root by default).
fn copy_up_parents(
    merged: &Path,
    upper: &Path,
    rel: &Path,
    owner: Option<(u32, u32)>,
) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mut cur = PathBuf::new();
    let Some(parent) = rel.parent() else {
        return Ok(());
    };
    for c in parent.components() {
        cur.push(c);
        let up = upper.join(&cur);
        if std::fs::symlink_metadata(&up).is_ok() {
            continue;
        }
        std::fs::create_dir(&up).with_context(|| format!("creating {}", up.display()))?;
        let (mode, uid, gid, mtime) = match std::fs::symlink_metadata(merged.join(&cur)) {
            Ok(m) if m.is_dir() => (m.mode() & 0o7777, m.uid(), m.gid(), Some(m.mtime())),
            Ok(_) => bail!("{} is not a directory", cur.display()),
            Err(_) => {
                let (u, g) = owner.unwrap_or((0, 0));
                (0o755, u, g, None)
            }
        };
        std::os::unix::fs::lchown(&up, Some(uid), Some(gid))?;
        std::fs::set_permissions(&up, std::fs::Permissions::from_mode(mode))?;
        if let Some(t) = mtime {
            let ts = nix::sys::time::TimeSpec::new(t, 0);
            nix::sys::stat::utimensat(
                None,
                &up,
                &ts,
                &ts,
                nix::sys::stat::UtimensatFlags::NoFollowSymlink,
            )?;
        }
    }
    Ok(())
}

/// Snapshot dirs for `layers`, unpacking any that aren't yet.
///
/// A layer that occurs more than once (every no-op step is the same empty
/// layer) is one snapshot directory, and overlayfs refuses a lower given
/// twice (ELOOP). Only its topmost occurrence is kept: the same content
/// applied again on top makes the lower copy invisible.
pub(super) fn lower_dirs_of(ctx: &BuildCtx<'_>, layers: &[CachedLayer]) -> Result<Vec<PathBuf>> {
    let mut dirs: Vec<PathBuf> = layers
        .iter()
        .map(|l| ensure_layer(ctx.store, &l.descriptor.digest, &l.diff_id))
        .collect::<Result<_>>()?;
    let mut seen = std::collections::HashSet::new();
    let mut top_down: Vec<PathBuf> = Vec::with_capacity(dirs.len());
    while let Some(d) = dirs.pop() {
        if seen.insert(d.clone()) {
            top_down.push(d);
        }
    }
    top_down.reverse();
    Ok(top_down)
}

/// A shebang heredoc's file, as BuildKit makes it (mode 0755 in a scratch
/// directory mounted read-only at /dev/pipes): written under the step's
/// private work directory.
fn pipe_mount(work: &Path, name: &str, data: &str) -> Result<RunMount> {
    use std::os::unix::fs::PermissionsExt;
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        bail!("heredoc name {name:?} is not a file name");
    }
    let dir = work.join("pipes");
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let file = dir.join(name);
    std::fs::write(&file, data).with_context(|| format!("writing {}", file.display()))?;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    Ok(RunMount {
        target: dockerfile::PIPES_DIR.to_string(),
        source: MountSource::Bind {
            root: dir,
            path: PathBuf::from("/"),
            readonly: true,
        },
    })
}

/// A reader for `path` if it is a (possibly gzip/zstd compressed) tar archive.
fn archive_reader(sel: &Selected) -> Result<Option<Box<dyn std::io::Read>>> {
    use std::io::Read;
    let mut head = Vec::with_capacity(512);
    let mut r = layer::decompressed(crate::exec::copy::open_selected_file(sel)?)?;
    r.by_ref().take(512).read_to_end(&mut head).ok();
    if head.len() >= 262 && &head[257..262] == b"ustar" {
        return Ok(Some(layer::decompressed(
            crate::exec::copy::open_selected_file(sel)?,
        )?));
    }
    Ok(None)
}

/// Lexically cleans an absolute path (`/a/./b/../c/` → `/a/c`).
fn clean_abs(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    format!("/{}", out.join("/"))
}

/// Go's `time.Duration` String() for whole units, as BuildKit prints HEALTHCHECK.
fn go_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let secs = ns / 1_000_000_000;
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{s}s"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(clean_abs("/a/./b/../c/"), "/a/c");
        assert_eq!(clean_abs("/../x"), "/x");
        assert_eq!(go_duration(90_000_000_000), "1m30s");
        assert_eq!(go_duration(0), "0s");
    }
}
