//! The store port's implementations.

pub mod sqlite;
