//! Dockerfile frontend: parser directives, instructions, variable substitution, .dockerignore.
//!
//! * [`ast`]: the syntax tree ([`Dockerfile`], [`Stage`], [`Node`], [`Instruction`]).
//! * [`lex`]: BuildKit-compatible word expansion ([`expand`], [`Lexer`]).
//! * [`ParseError`]: every error names the file and line (`Dockerfile:7: ...`).

pub mod ast;
mod error;
pub mod lex;

pub use ast::*;
pub use error::ParseError;
pub use lex::{expand, Lexer};
