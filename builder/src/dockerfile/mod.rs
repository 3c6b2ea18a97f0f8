//! Dockerfile frontend: parser directives, instructions, variable substitution, .dockerignore.
//!
//! Behaviour follows BuildKit's Dockerfile frontend (parser, instructions,
//! shell lexer, dockerfile2llb scoping) and moby's `.dockerignore` matcher.
//!
//! * [`parse`] turns Dockerfile text into a [`Dockerfile`] ([`ast`]): parser
//!   directives (`# escape=`, `# syntax=`, `# check=`), global ARGs, stages,
//!   and one [`Node`] per instruction with its 1-based line and original text
//!   (continuations joined, comments dropped, heredoc bodies attached to the
//!   instruction), plus [`Warning`]s for deprecated syntax. Nothing is
//!   expanded at this point.
//! * [`resolve`] / [`resolve_with_base_images`] apply ARG scoping, build args
//!   and the automatic platform args, expand every word BuildKit expands
//!   (ENV, LABEL, ARG, EXPOSE, VOLUME, USER, WORKDIR, STOPSIGNAL, COPY/ADD
//!   paths and flags, RUN mount paths; never RUN/CMD/ENTRYPOINT/SHELL/
//!   HEALTHCHECK), and return a [`BuildPlan`]: the stages needed for
//!   `--target`, dependencies first, each with its dependency list so
//!   independent stages can be built in parallel.
//! * [`lex`]: BuildKit's word expansion on its own ([`expand`], [`Lexer`]).
//! * [`ignore`]: `.dockerignore` ([`IgnoreMatcher`], [`find_ignore_file`]).
//! * [`ParseError`]: every error names the file and line (`Dockerfile:7: ...`);
//!   use [`ParseError::with_file`] to show the real Dockerfile name.
//!
//! ```
//! use berth_builder::dockerfile::{self, Base, Instruction, ResolveOptions};
//!
//! let df = dockerfile::parse(
//!     "ARG TAG=3.19\nFROM alpine:$TAG AS build\nENV DIR=/src\nWORKDIR $DIR\nFROM scratch\nCOPY --from=build /src /\n",
//! )
//! .unwrap();
//! let plan = dockerfile::resolve(&df, &ResolveOptions::host(), &mut |_image, _platform| Ok(vec![]))
//!     .unwrap();
//! let build = plan.stage(0).unwrap();
//! assert_eq!(build.base, Base::Image("alpine:3.19".into()));
//! assert_eq!(build.instructions[1].instruction, Instruction::Workdir("/src".into()));
//! assert_eq!(plan.stage(1).unwrap().deps, vec![0]);
//!
//! let ignore = dockerfile::IgnoreMatcher::from_dockerignore("target\n*.log\n!keep.log\n").unwrap();
//! assert!(ignore.can_skip_dir("target"));
//! assert!(!ignore.is_excluded("keep.log", false));
//! ```

pub mod ast;
mod duration;
mod error;
mod flags;
mod heredoc;
pub mod ignore;
pub mod lex;
mod lines;
mod mount;
mod parser;
mod platform;
mod reference;
mod resolve;
mod words;

pub use ast::*;
pub use error::ParseError;
pub use heredoc::{run_script, RunScript, PIPES_DIR};
pub use ignore::{find_ignore_file, read_patterns, IgnoreMatcher};
pub use lex::{expand, Lexer};
pub use parser::{parse, parse_onbuild_trigger};
pub use platform::Platform;
pub use reference::check_reference;
pub use resolve::{
    normalize_port, resolve, resolve_with_base_images, Base, BaseEnvError, BaseEnvFn, BaseImage,
    BaseImageFn, BuildPlan, ResolveOptions, ResolvedNode, ResolvedStage, PREDEFINED_ARGS,
};

/// Largest Dockerfile accepted: 2 MiB, buildx's limit on Dockerfiles it
/// fetches (docker/buildx#2716; BuildKit's parser also refuses lines over
/// 64 KiB). Real Dockerfiles are kilobytes; a huge one costs minutes and
/// gigabytes to parse and yields an image config nothing can read.
pub const MAX_DOCKERFILE_SIZE: u64 = 2 << 20;

/// Refuses a Dockerfile of `size` bytes over [`MAX_DOCKERFILE_SIZE`].
pub fn check_dockerfile_size(size: u64) -> Result<(), crate::image::TooLarge> {
    crate::image::check_size("the Dockerfile", size, MAX_DOCKERFILE_SIZE)
}

/// Reads a Dockerfile, refusing one over [`MAX_DOCKERFILE_SIZE`] before
/// reading it.
pub fn read_dockerfile(path: &std::path::Path) -> anyhow::Result<String> {
    use anyhow::Context;
    let data = crate::image::read_limited(path, "the Dockerfile", MAX_DOCKERFILE_SIZE)?;
    String::from_utf8(data).with_context(|| format!("{} is not UTF-8", path.display()))
}

#[cfg(test)]
mod parser_tests;
#[cfg(test)]
mod resolve_tests;

/// The first instruction of `FROM scratch` followed by `lines` (for tests
/// of how one instruction is rendered).
#[cfg(test)]
pub(crate) fn first_instruction_after_scratch(lines: &str) -> Instruction {
    parse(&format!("FROM scratch\n{lines}"))
        .unwrap()
        .stages
        .remove(0)
        .instructions
        .remove(0)
        .instruction
}
