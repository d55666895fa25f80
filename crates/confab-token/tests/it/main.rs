//! Integration tests of confab-token: the shared Token04 vectors and properties.

mod props;
mod vectors;
