//! Moving data into and through tessera: schema versions of the store, and
//! backup and restore of a whole data directory.

pub mod backup;
pub mod legacy;
pub mod schema;
