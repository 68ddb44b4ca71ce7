//! Rate limiting through real gateways: Local limits in this process (`local`) and through the
//! real binary (`binary`), Global limits in real Redis through the real binary (`global`, run
//! by scripts/test.sh).

mod binary;
mod clients;
#[path = "../common/mod.rs"]
mod common;
mod global;
mod jwt_claim;
mod local;
mod support;
