//! The directory and provisioner ports' implementations.

pub mod ldap;
