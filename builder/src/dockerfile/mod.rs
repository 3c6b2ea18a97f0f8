//! Dockerfile frontend: parser directives, instructions, variable substitution, .dockerignore.
