//! Dockerfile frontend: parser directives, instructions, variable substitution, .dockerignore.
//!
//! * [`parse`] turns Dockerfile text into a [`Dockerfile`] ([`ast`]): parser
//!   directives, stages, and one [`Node`] per instruction with its line number
//!   and original text. Nothing is expanded at this point.
//! * [`lex`]: BuildKit-compatible word expansion ([`expand`], [`Lexer`]).
//! * [`resolve`] applies ARG scoping, build args and platform args, expands
//!   every word BuildKit expands, and returns a [`BuildPlan`]: the stages
//!   needed for `--target` in dependency order with their dependency graph.
//! * [`ignore`]: `.dockerignore` ([`IgnoreMatcher`], [`find_ignore_file`]).
//! * [`ParseError`]: every error names the file and line (`Dockerfile:7: ...`).

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
mod resolve;
mod words;

pub use ast::*;
pub use error::ParseError;
pub use ignore::{find_ignore_file, read_patterns, IgnoreMatcher};
pub use lex::{expand, Lexer};
pub use parser::{parse, parse_onbuild_trigger};
pub use platform::Platform;
pub use resolve::{
    resolve, resolve_with_base_images, Base, BaseEnvError, BaseEnvFn, BaseImage, BaseImageFn,
    BuildPlan, ResolveOptions, ResolvedNode, ResolvedStage, PREDEFINED_ARGS,
};

#[cfg(test)]
mod parser_tests;
#[cfg(test)]
mod resolve_tests;
