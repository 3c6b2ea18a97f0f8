//! Syntax tree of a parsed Dockerfile.
//!
//! The same types describe both the *raw* tree produced by [`super::parse`]
//! (words exactly as written: quotes and `$variables` still present) and the
//! *resolved* instructions of a [`super::BuildPlan`] (every word that BuildKit
//! expands is expanded and unquoted). RUN/CMD/ENTRYPOINT/SHELL/HEALTHCHECK are
//! never expanded by the frontend: the shell in the container does it.

use std::time::Duration;

/// A whole Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Dockerfile {
    pub directives: Directives,
    /// `ARG` instructions written before the first `FROM` (each node holds an
    /// [`Instruction::Arg`]). They are only visible in `FROM` lines and in
    /// stages that redeclare them.
    pub global_args: Vec<Node>,
    pub stages: Vec<Stage>,
    /// Non-fatal findings BuildKit also reports (deprecated syntax), in
    /// line order. Building proceeds regardless.
    pub warnings: Vec<Warning>,
}

/// A non-fatal parser finding, e.g. `Dockerfile:4: MAINTAINER instruction is
/// deprecated in favor of using label`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Warning {
    pub line: usize,
    pub message: String,
}

/// Parser directives (`# escape=`, `# syntax=`, `# check=`) from the top of
/// the file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Directives {
    /// Escape / line continuation character: `\` (default) or `` ` ``.
    pub escape: char,
    /// `# syntax=` frontend image reference; berth records but does not use it.
    pub syntax: Option<String>,
    /// `# check=` lint configuration; recorded and otherwise ignored.
    pub check: Option<String>,
}

impl Default for Directives {
    fn default() -> Self {
        Directives {
            escape: '\\',
            syntax: None,
            check: None,
        }
    }
}

/// One build stage: a `FROM` line and the instructions up to the next `FROM`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Stage {
    /// Position of the stage in the file (0-based); `COPY --from=<index>`.
    pub index: usize,
    /// `AS name`, lower-cased as BuildKit does.
    pub name: Option<String>,
    /// Base image reference or earlier stage name (unexpanded in the raw tree).
    pub base: String,
    /// `--platform=` value (unexpanded in the raw tree).
    pub platform: Option<String>,
    /// 1-based line of the `FROM` instruction.
    pub line: usize,
    /// The `FROM` line as written (continuations joined).
    pub original: String,
    pub instructions: Vec<Node>,
}

/// An instruction together with where it came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Node {
    /// 1-based line on which the instruction starts.
    pub line: usize,
    /// The instruction as written, continuations joined, comments dropped,
    /// heredoc bodies excluded (e.g. `RUN apt-get update && apt-get install x`).
    /// The engine uses it for image history and cache keys.
    pub original: String,
    pub instruction: Instruction,
}

/// Every Dockerfile instruction except `FROM` (which starts a [`Stage`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Instruction {
    Run(Run),
    Copy(Copy),
    Add(Add),
    /// `ENV k=v ...` / legacy `ENV k v`. Applied left to right, but all values
    /// are expanded with the environment from *before* the instruction.
    Env(Vec<KeyValue>),
    Arg(Vec<ArgDecl>),
    Label(Vec<KeyValue>),
    /// Port specs such as `80`, `53/udp`, `8000-8010/tcp` (after expansion a
    /// single written word may produce several ports).
    Expose(Vec<String>),
    Volume(Vec<String>),
    /// `user[:group]` as a single string.
    User(String),
    Workdir(String),
    Entrypoint(CommandForm),
    Cmd(CommandForm),
    Healthcheck(Healthcheck),
    /// `SHELL ["executable", "params"...]` (JSON form only).
    Shell(Vec<String>),
    StopSignal(String),
    OnBuild(OnBuild),
    Maintainer(String),
}

impl Instruction {
    /// The upper-case keyword (`RUN`, `COPY`, ...).
    pub fn keyword(&self) -> &'static str {
        match self {
            Instruction::Run(_) => "RUN",
            Instruction::Copy(_) => "COPY",
            Instruction::Add(_) => "ADD",
            Instruction::Env(_) => "ENV",
            Instruction::Arg(_) => "ARG",
            Instruction::Label(_) => "LABEL",
            Instruction::Expose(_) => "EXPOSE",
            Instruction::Volume(_) => "VOLUME",
            Instruction::User(_) => "USER",
            Instruction::Workdir(_) => "WORKDIR",
            Instruction::Entrypoint(_) => "ENTRYPOINT",
            Instruction::Cmd(_) => "CMD",
            Instruction::Healthcheck(_) => "HEALTHCHECK",
            Instruction::Shell(_) => "SHELL",
            Instruction::StopSignal(_) => "STOPSIGNAL",
            Instruction::OnBuild(_) => "ONBUILD",
            Instruction::Maintainer(_) => "MAINTAINER",
        }
    }
}

/// Shell form (`RUN echo hi`, run through the stage's SHELL) or exec form
/// (`RUN ["echo", "hi"]`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum CommandForm {
    Shell(String),
    Exec(Vec<String>),
}

/// `key=value` pair of ENV or LABEL.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

/// One name of an `ARG` instruction.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ArgDecl {
    pub name: String,
    /// `ARG name=default`; `None` for a bare `ARG name`.
    pub default: Option<String>,
}

/// A heredoc (`<<EOF` ... `EOF`) attached to RUN, COPY or ADD.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Heredoc {
    /// Delimiter word with quotes removed (`EOF` for `<<'EOF'`).
    pub name: String,
    /// Body, one `\n` after every line; for `<<-` leading tabs are already
    /// stripped. In a resolved COPY/ADD with `expand`, variables are expanded.
    pub content: String,
    /// False when the delimiter was quoted (`<<'EOF'`, `<<"EOF"`): no
    /// variable expansion of the body.
    pub expand: bool,
    /// `<<-EOF`: leading tabs stripped from body lines and the terminator.
    pub chomp: bool,
    /// File descriptor prefix as in `RUN 3<<EOF`.
    pub fd: Option<u32>,
    /// The body as written (for `<<-`, before its tabs are stripped): a
    /// RUN that is more than the heredoc passes this to the shell, which
    /// strips the tabs itself, and BuildKit's history shows it so.
    #[serde(skip)]
    pub raw: String,
}

/// `RUN`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Run {
    pub command: CommandForm,
    pub mounts: Vec<Mount>,
    /// `--network=`; `None` when not given (same as `default`).
    pub network: Option<NetworkMode>,
    /// `--security=`; `None` when not given (same as `sandbox`).
    pub security: Option<SecurityMode>,
    /// Heredocs referenced by the command line, in order. When the command
    /// is just `<<EOF` the body is the script to run.
    pub heredocs: Vec<Heredoc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum NetworkMode {
    Default,
    None,
    Host,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum SecurityMode {
    Sandbox,
    Insecure,
}

/// `RUN --mount=...`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Mount {
    pub kind: MountType,
    /// `target`/`dst`/`destination`. Required for bind, cache and tmpfs; for
    /// secret a resolved plan fills `/run/secrets/<id>`.
    pub target: Option<String>,
    /// `source`/`src`: path inside `from` (bind/cache) or the context.
    pub source: Option<String>,
    /// `from=`: stage name, stage index or image reference.
    pub from: Option<String>,
    /// `id=`: cache id (a resolved plan defaults it to the target) or
    /// secret id (defaults to the target's base name).
    pub id: Option<String>,
    /// Cache sharing mode; a resolved cache mount always has one (`shared`).
    pub sharing: Option<SharingMode>,
    /// File mode for cache/secret (octal in the Dockerfile).
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Effective read-only flag: bind and secret default to read-only,
    /// cache and tmpfs to read-write.
    pub readonly: bool,
    /// Secret/ssh: fail the build if it is not provided.
    pub required: bool,
    /// tmpfs size in bytes.
    pub size: Option<u64>,
    /// Secret: expose as this environment variable instead of / besides a file.
    pub env: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum MountType {
    Bind,
    Cache,
    Tmpfs,
    Secret,
    Ssh,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum SharingMode {
    Shared,
    Private,
    Locked,
}

/// A source of COPY/ADD: a path (or URL / git ref for ADD) or a heredoc.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Source {
    Path(String),
    Heredoc(Heredoc),
}

/// Arguments shared by COPY and ADD.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FileSpec {
    pub sources: Vec<Source>,
    pub dest: String,
    /// `--chown=user[:group]`.
    pub chown: Option<String>,
    /// `--chmod=` as written (octal like `755`); see [`FileSpec::chmod_bits`].
    pub chmod: Option<String>,
    pub link: bool,
    /// `--exclude=` patterns (repeatable).
    pub excludes: Vec<String>,
    pub parents: bool,
}

impl FileSpec {
    /// `--chmod` parsed as octal permission bits (`None` when absent).
    pub fn chmod_bits(&self) -> Result<Option<u32>, String> {
        match &self.chmod {
            None => Ok(None),
            Some(s) => parse_octal_mode(s).map(Some),
        }
    }
}

/// Parses an octal file mode such as `755` or `0644` (at most `07777`).
pub fn parse_octal_mode(s: &str) -> Result<u32, String> {
    // Digits only: from_str_radix would also take a sign.
    if !s.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(format!("invalid chmod value {s:?}: must be octal"));
    }
    let bits = u32::from_str_radix(s, 8)
        .map_err(|_| format!("invalid chmod value {s:?}: must be octal"))?;
    if s.is_empty() || bits > 0o7777 {
        return Err(format!(
            "invalid chmod value {s:?}: must be octal between 0 and 7777"
        ));
    }
    Ok(bits)
}

/// `COPY`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Copy {
    pub files: FileSpec,
    /// `--from=`: stage name, stage index or image reference.
    pub from: Option<String>,
}

/// `ADD`. Whether a local tar is auto-extracted is the engine's decision.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Add {
    pub files: FileSpec,
    /// `--checksum=sha256:...` for http(s) sources.
    pub checksum: Option<String>,
    pub keep_git_dir: bool,
}

/// `HEALTHCHECK`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Healthcheck {
    /// `HEALTHCHECK NONE`: disable any inherited check.
    None,
    Check(HealthConfig),
}

/// `HEALTHCHECK [options] CMD ...`; unset options inherit the defaults.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HealthConfig {
    /// Exec form becomes `["CMD", ...]`, shell form `["CMD-SHELL", cmd]`
    /// in the image config; see [`HealthConfig::test`].
    pub command: CommandForm,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub start_period: Option<Duration>,
    pub start_interval: Option<Duration>,
    pub retries: Option<u32>,
}

impl HealthConfig {
    /// The OCI/Docker image config `Healthcheck.Test` array.
    pub fn test(&self) -> Vec<String> {
        match &self.command {
            CommandForm::Shell(s) => vec!["CMD-SHELL".to_string(), s.clone()],
            CommandForm::Exec(v) => {
                let mut t = vec!["CMD".to_string()];
                t.extend(v.iter().cloned());
                t
            }
        }
    }
}

/// `ONBUILD <instruction>`: stored in the image config, run in child builds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OnBuild {
    /// The trigger as written (e.g. `RUN make`), what goes in the image config.
    pub expression: String,
    /// The trigger parsed (unexpanded; it is expanded in the child build).
    pub trigger: Box<Instruction>,
}
