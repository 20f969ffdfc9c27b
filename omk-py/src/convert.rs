//! `serde_json::Value` <-> Python objects, directly (no JSON text in
//! between). Objects become `dict`s in document order (serde_json keeps
//! insertion order in this workspace), arrays `list`s, integers `int`,
//! other numbers `float`.

use pyo3::exceptions::PyRecursionError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde_json::{Map, Number, Value};

use crate::errors::InvalidInputError;

/// Deeper values than this are refused (a self-referencing list, say).
const MAX_DEPTH: usize = 256;

/// A JSON value as a Python object.
pub fn to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => number_to_py(py, n)?,
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (k, item) in map {
                dict.set_item(PyString::new(py, k), to_py(py, item)?)?;
            }
            dict.into_any()
        }
    })
}

fn number_to_py<'py>(py: Python<'py>, n: &Number) -> PyResult<Bound<'py, PyAny>> {
    if let Some(i) = n.as_i64() {
        Ok(i.into_pyobject(py)?.into_any())
    } else if let Some(u) = n.as_u64() {
        Ok(u.into_pyobject(py)?.into_any())
    } else {
        Ok(PyFloat::new(py, n.as_f64().unwrap_or(f64::NAN)).into_any())
    }
}

/// Serialize a result document and convert it.
pub fn doc_to_py<T: serde::Serialize>(py: Python<'_>, doc: &T) -> PyResult<Py<PyAny>> {
    let v = serde_json::to_value(doc)
        .map_err(|e| crate::errors::OmkError::new_err(format!("cannot encode the result: {e}")))?;
    Ok(to_py(py, &v)?.unbind())
}

/// A Python value as JSON: `None`, `bool`, `int`, `float` (finite), `str`,
/// `os.PathLike` (as its path string), `dict` with `str` keys, `list` and
/// `tuple`. Anything else is an `InvalidInputError` naming where it was.
pub fn from_py(obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    from_py_at(obj, "params", 0)
}

fn from_py_at(obj: &Bound<'_, PyAny>, at: &str, depth: usize) -> PyResult<Value> {
    if depth > MAX_DEPTH {
        return Err(PyRecursionError::new_err(format!(
            "{at}: nested deeper than {MAX_DEPTH} levels"
        )));
    }
    if obj.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if obj.is_instance_of::<PyInt>() {
        if let Ok(i) = obj.extract::<i64>() {
            return Ok(Value::from(i));
        }
        if let Ok(u) = obj.extract::<u64>() {
            return Ok(Value::from(u));
        }
        return Err(InvalidInputError::new_err(format!(
            "{at}: integer {obj} does not fit in 64 bits"
        )));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        let f = f.value();
        return Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| InvalidInputError::new_err(format!("{at}: {f} is not a JSON number")));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Value::String(s.to_str()?.to_owned()));
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        let mut map = Map::with_capacity(d.len());
        for (k, v) in d.iter() {
            let Ok(key) = k.cast::<PyString>() else {
                return Err(InvalidInputError::new_err(format!(
                    "{at}: dict keys must be str, not {}",
                    k.get_type().name()?
                )));
            };
            let key = key.to_str()?.to_owned();
            let item = from_py_at(&v, &format!("{at}[{key:?}]"), depth + 1)?;
            map.insert(key, item);
        }
        return Ok(Value::Object(map));
    }
    if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        let mut out = Vec::new();
        for (i, item) in obj.try_iter()?.enumerate() {
            out.push(from_py_at(&item?, &format!("{at}[{i}]"), depth + 1)?);
        }
        return Ok(Value::Array(out));
    }
    if let Ok(p) = obj.extract::<std::path::PathBuf>() {
        if let Some(s) = p.to_str() {
            return Ok(Value::String(s.to_owned()));
        }
    }
    Err(InvalidInputError::new_err(format!(
        "{at}: a {} cannot be sent as JSON (use None, bool, int, float, str, list or dict)",
        obj.get_type().name()?
    )))
}
