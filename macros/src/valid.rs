//! Checks on the model that parsing alone does not make; all errors are collected and
//! each points at the offending tokens.

use std::collections::HashMap;

use syn::{Error, FnArg, Result};

use crate::ast::{push, Service};

pub fn check(service: &Service) -> Result<()> {
    let mut errors = None;
    let item = &service.item;
    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
        push(
            &mut errors,
            Error::new_spanned(&item.generics, "#[ipc_service] traits cannot be generic"),
        );
    }
    if let Some(unsafety) = &item.unsafety {
        push(
            &mut errors,
            Error::new_spanned(unsafety, "#[ipc_service] traits cannot be unsafe"),
        );
    }
    let mut ids: HashMap<u32, &syn::Ident> = HashMap::new();
    let mut bare: Option<&syn::Ident> = None;
    for method in &service.methods {
        let sig = &method.item.sig;
        if sig.asyncness.is_none() {
            push(
                &mut errors,
                Error::new_spanned(
                    sig.fn_token,
                    "methods of an #[ipc_service] trait must be `async fn`",
                ),
            );
        }
        if let Some(constness) = &sig.constness {
            push(
                &mut errors,
                Error::new_spanned(constness, "service methods cannot be `const`"),
            );
        }
        if let Some(unsafety) = &sig.unsafety {
            push(
                &mut errors,
                Error::new_spanned(unsafety, "service methods cannot be `unsafe`"),
            );
        }
        if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
            push(
                &mut errors,
                Error::new_spanned(&sig.generics, "service methods cannot be generic"),
            );
        }
        if let Some(variadic) = &sig.variadic {
            push(
                &mut errors,
                Error::new_spanned(variadic, "service methods cannot be variadic"),
            );
        }
        match sig.inputs.first() {
            Some(FnArg::Receiver(receiver))
                if receiver.reference.is_some()
                    && receiver.mutability.is_none()
                    && receiver.colon_token.is_none() => {}
            Some(other) => push(
                &mut errors,
                Error::new_spanned(other, "the first argument must be `&self`"),
            ),
            None => push(
                &mut errors,
                Error::new_spanned(&sig.ident, "service methods take `&self`"),
            ),
        }
        if sig.inputs.len() > 2 {
            let extra = sig.inputs.iter().nth(2);
            push(
                &mut errors,
                Error::new_spanned(
                    extra,
                    "service methods take at most one request argument; wrap several values in one message",
                ),
            );
        }
        if let Some(body) = &method.item.default {
            push(
                &mut errors,
                Error::new_spanned(
                    body,
                    "service methods cannot have a default body; implement it in the `impl`",
                ),
            );
        }
        if let Some(span) = method.bare {
            if method.request.is_none() {
                push(
                    &mut errors,
                    Error::new(
                        span,
                        "a `bare` method must take a request: bare peers send one",
                    ),
                );
            }
            if let Some(first) = bare.replace(&method.ident) {
                push(
                    &mut errors,
                    Error::new(
                        span,
                        format!("only one method can be `bare`; `{first}` already is"),
                    ),
                );
            }
        }
        if method.id == 0 {
            push(
                &mut errors,
                Error::new(method.id_span, "method ids start at 1"),
            );
        } else if let Some(first) = ids.insert(method.id, &method.ident) {
            push(
                &mut errors,
                Error::new(
                    method.id_span,
                    format!("method id {} is already used by `{first}`", method.id),
                ),
            );
        }
    }
    match errors {
        Some(errors) => Err(errors),
        None => Ok(()),
    }
}
