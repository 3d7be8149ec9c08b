//! The `loramux` library side of the binary: the HTTP server, built by a function so tests
//! run it in-process.

pub mod server;
