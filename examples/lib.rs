//! Examples live in this folder as cargo examples; see README.md.
