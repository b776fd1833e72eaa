//! Unit tests of the transform module, one file per part.

mod cors;
mod headers;
mod ip;
mod origin;
mod template;
