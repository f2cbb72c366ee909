//! Checks on the model that parsing alone does not make; all errors are collected and
//! each points at the offending tokens.

use std::collections::HashMap;

use syn::{Error, FnArg, Result};

use crate::ast::{push, Method, Service, StreamArg};

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
        check_arguments(method, &mut errors);
        if let Some(stream) = &method.stream {
            check_stream(method, stream, &mut errors);
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

/// At most one request argument, then optionally one `ServerStream<Item>`, last.
fn check_arguments(method: &Method, errors: &mut Option<Error>) {
    let typed: Vec<&syn::PatType> = method
        .item
        .sig
        .inputs
        .iter()
        .filter_map(|input| match input {
            FnArg::Typed(arg) => Some(arg),
            FnArg::Receiver(_) => None,
        })
        .collect();
    let is_stream = |arg: &syn::PatType| {
        matches!(&*arg.ty, syn::Type::Path(p)
            if p.path.segments.last().is_some_and(|s| s.ident == "ServerStream"))
    };
    let requests: Vec<_> = typed.iter().filter(|arg| !is_stream(arg)).collect();
    if let Some(extra) = requests.get(1) {
        push(
            errors,
            Error::new_spanned(
                extra,
                "service methods take at most one request argument; wrap several values in one message",
            ),
        );
    }
    let streams: Vec<_> = typed.iter().filter(|arg| is_stream(arg)).collect();
    if let Some(extra) = streams.get(1) {
        push(
            errors,
            Error::new_spanned(extra, "a method has at most one `ServerStream` argument"),
        );
    }
    if let (Some(stream), Some(last)) = (streams.first(), typed.last()) {
        if !std::ptr::eq(**stream, *last) {
            push(
                errors,
                Error::new_spanned(
                    stream,
                    "the `ServerStream` argument comes last, after the request",
                ),
            );
        }
    }
    if let Some((_, request)) = &method.request {
        check_request_type(request, errors);
    }
}

/// The request is an owned message: not a reference, and not a stream of requests
/// (client streaming is not supported).
fn check_request_type(request: &syn::Type, errors: &mut Option<Error>) {
    match request {
        syn::Type::Reference(reference) => push(
            errors,
            Error::new_spanned(
                reference,
                "requests are taken by value: write the message type without `&`",
            ),
        ),
        syn::Type::ImplTrait(_) => push(
            errors,
            Error::new_spanned(
                request,
                "client streaming is not supported: take one request message",
            ),
        ),
        syn::Type::Path(path)
            if path
                .path
                .segments
                .last()
                .is_some_and(|s| s.ident == "Streaming") =>
        {
            push(
                errors,
                Error::new_spanned(
                    request,
                    "client streaming is not supported: take one request message \
                     (a repeated field carries many values)",
                ),
            )
        }
        _ => {}
    }
}

/// A server-streaming method: `ServerStream<Item>` with one item type, returning
/// `Result<(), Status>`, and not `bare`.
fn check_stream(method: &Method, stream: &StreamArg, errors: &mut Option<Error>) {
    if stream.item.is_none() {
        push(
            errors,
            Error::new_spanned(
                &stream.ty,
                "expected `ServerStream<Item>` with one message type",
            ),
        );
    }
    let returns_unit = matches!(&*method.output, syn::Type::Path(path)
    if path.path.segments.last().is_some_and(|last| match &last.arguments {
        syn::PathArguments::AngleBracketed(args) => matches!(
            args.args.first(),
            Some(syn::GenericArgument::Type(syn::Type::Tuple(t))) if t.elems.is_empty()
        ),
        _ => false,
    }));
    if !returns_unit {
        push(
            errors,
            Error::new_spanned(
                &method.output,
                "a streaming method returns `Result<(), Status>`: its items go through the `ServerStream`",
            ),
        );
    }
    if let Some(span) = method.bare {
        push(
            errors,
            Error::new(
                span,
                "a `bare` method cannot stream: bare peers expect one answer",
            ),
        );
    }
}
