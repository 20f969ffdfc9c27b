//! The Python extension module `omk._omk`. The public Python API lives in
//! `python/omk/__init__.py`, which re-exports from here.

use pyo3::prelude::*;

/// The omk version (same as the Rust crate and `omk --version`).
#[pyfunction]
fn version() -> &'static str {
    omk_core::VERSION
}

#[pymodule]
fn _omk(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", omk_core::VERSION)?;
    m.add_function(wrap_pyfunction!(version, m)?)?;
    Ok(())
}
