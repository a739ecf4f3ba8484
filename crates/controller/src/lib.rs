//! The Kubernetes controller. It reconciles the Tollgate kinds into gateway
//! workloads and pushes compiled snapshots to them; it is built in the
//! control-plane issue and intentionally has no code yet, so that nothing here
//! pretends to work.
