//! guestos
