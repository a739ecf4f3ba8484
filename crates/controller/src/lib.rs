//! The Kubernetes controller. Pure logic lives in modules with no IO
//! ([`status`]); the parts that talk to the apiserver are thin and come on
//! top (control-plane issue, in progress).

pub mod status;
