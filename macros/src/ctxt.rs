//! The errors found while reading and checking one service, all reported at once (the
//! shape of `serde_derive`'s `Ctxt`).

use syn::Error;

/// Collects every error, and which methods they make unusable.
#[derive(Default)]
pub struct Ctxt {
    errors: Option<Error>,
    /// Indexes (into `Service::methods`) of the methods that cannot be served as written.
    faulty: Vec<usize>,
}

/// Why a service is not expanded: every error, and the methods they concern.
pub struct Rejection {
    /// All errors, combined in the order they were found.
    pub errors: Error,
    /// Indexes of the methods that cannot be served as written.
    pub faulty: Vec<usize>,
}

impl Ctxt {
    /// An error about the service as a whole.
    pub fn error(&mut self, error: Error) {
        match &mut self.errors {
            Some(errors) => errors.combine(error),
            None => self.errors = Some(error),
        }
    }

    /// An error about method `index`, which is then left out of the generated code.
    pub fn method_error(&mut self, index: usize, error: Error) {
        self.error(error);
        self.exclude(index);
    }

    /// Leaves method `index` out of the generated code without an error of its own
    /// (its problem is reported elsewhere).
    pub fn exclude(&mut self, index: usize) {
        if !self.faulty.contains(&index) {
            self.faulty.push(index);
        }
    }

    /// `Ok` when nothing was found.
    pub fn finish(self) -> Result<(), Rejection> {
        match self.errors {
            None => Ok(()),
            Some(errors) => Err(Rejection {
                errors,
                faulty: self.faulty,
            }),
        }
    }
}
