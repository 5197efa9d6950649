//! The directory and provisioner ports' implementations: LDAP (OpenLDAP, Active Directory)
//! and Entra ID through Microsoft Graph.

pub mod graph;
pub mod ldap;
