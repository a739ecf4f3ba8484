fn main() { print!("{}", tollgate_api::crds_yaml().unwrap()); }
