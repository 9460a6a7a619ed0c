//! The generated Kessel Inventory v1beta2 client and messages (from
//! `proto/` by `host/build.rs`): the only `include_proto!` of the host.

#![allow(clippy::all, missing_docs, unused_qualifications)]

tonic::include_proto!("kessel.inventory.v1beta2");

/// The `google.rpc` messages of error details.
pub mod rpc {
    #![allow(clippy::all, missing_docs, unused_qualifications)]
    tonic::include_proto!("google.rpc");
}
