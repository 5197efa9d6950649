//! The store port's implementations.

pub mod postgres;
pub mod sqlite;
