//! The rules a service trait follows, one small function each (the shape of
//! `serde_derive`'s `internals/check.rs`). Every rule reports all it finds to the
//! [`Ctxt`], at the user's own tokens, so that one compilation shows every mistake.

use std::collections::HashMap;

use syn::{Error, FnArg, GenericArgument, Ident, PathArguments, ReturnType, TraitItem, Type};

use crate::ast::{Method, MethodId, Service, StreamArg};
use crate::ctxt::Ctxt;

/// Runs every rule on `service`.
pub fn check(cx: &mut Ctxt, service: &Service) {
    check_name(cx, service);
    check_trait(cx, service);
    check_items(cx, service);
    for method in &service.methods {
        check_asyncness(cx, method);
        check_qualifiers(cx, method);
        check_generics(cx, method);
        check_receiver(cx, method);
        check_arguments(cx, method);
        check_request(cx, method);
        check_return(cx, method);
        check_stream(cx, method);
        check_body(cx, method);
    }
    check_ids(cx, service);
    check_bare(cx, service);
}

/// `#[ipc_service(name = "...")]` is not empty: peers compare it in the handshake.
fn check_name(cx: &mut Ctxt, service: &Service) {
    if let Some(lit) = &service.name_lit {
        if lit.value().trim().is_empty() {
            cx.error(Error::new_spanned(lit, "service name must not be empty"));
        }
    }
}

/// The trait is neither generic (the client and server name one concrete contract) nor
/// `unsafe`.
fn check_trait(cx: &mut Ctxt, service: &Service) {
    let item = &service.item;
    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
        cx.error(Error::new_spanned(
            &item.generics,
            "#[ipc_service] traits cannot be generic",
        ));
    }
    if let Some(unsafety) = &item.unsafety {
        cx.error(Error::new_spanned(
            unsafety,
            "#[ipc_service] traits cannot be unsafe",
        ));
    }
}

/// The trait contains only methods: no associated consts, types or macros.
fn check_items(cx: &mut Ctxt, service: &Service) {
    for item in &service.item.items {
        if !matches!(item, TraitItem::Fn(_)) {
            cx.error(Error::new_spanned(
                item,
                "#[ipc_service] traits may contain only methods",
            ));
        }
    }
}

/// Methods are `async fn`: each call is answered asynchronously.
fn check_asyncness(cx: &mut Ctxt, method: &Method) {
    let sig = &method.item.sig;
    if sig.asyncness.is_none() {
        cx.method_error(
            method.index,
            Error::new_spanned(
                sig.fn_token,
                "methods of an #[ipc_service] trait must be `async fn`",
            ),
        );
    }
}

/// Methods are plain Rust functions: not `const`, `unsafe`, `extern` or variadic.
fn check_qualifiers(cx: &mut Ctxt, method: &Method) {
    let sig = &method.item.sig;
    if let Some(constness) = &sig.constness {
        cx.method_error(
            method.index,
            Error::new_spanned(constness, "service methods cannot be `const`"),
        );
    }
    if let Some(unsafety) = &sig.unsafety {
        cx.method_error(
            method.index,
            Error::new_spanned(unsafety, "service methods cannot be `unsafe`"),
        );
    }
    if let Some(abi) = &sig.abi {
        cx.method_error(
            method.index,
            Error::new_spanned(abi, "service methods cannot be `extern`"),
        );
    }
    if let Some(variadic) = &sig.variadic {
        cx.method_error(
            method.index,
            Error::new_spanned(variadic, "service methods cannot be variadic"),
        );
    }
}

/// Methods are not generic: each has one request and one response type on the wire.
fn check_generics(cx: &mut Ctxt, method: &Method) {
    let generics = &method.item.sig.generics;
    if !generics.params.is_empty() || generics.where_clause.is_some() {
        cx.method_error(
            method.index,
            Error::new_spanned(generics, "service methods cannot be generic"),
        );
    }
}

/// The first argument is `&self`: handlers of one implementation run concurrently.
fn check_receiver(cx: &mut Ctxt, method: &Method) {
    let sig = &method.item.sig;
    match sig.inputs.first() {
        Some(FnArg::Receiver(receiver))
            if receiver.reference.is_some()
                && receiver.mutability.is_none()
                && receiver.colon_token.is_none() => {}
        Some(other) => cx.method_error(
            method.index,
            Error::new_spanned(other, "the first argument must be `&self`"),
        ),
        None => cx.method_error(
            method.index,
            Error::new_spanned(&sig.ident, "service methods take `&self`"),
        ),
    }
}

/// After `&self`: at most one request argument, then optionally one
/// `ServerStream<Item>`, last.
fn check_arguments(cx: &mut Ctxt, method: &Method) {
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
    let is_stream = |arg: &&syn::PatType| StreamArg::from_type(&arg.ty).is_some();
    if let Some(extra) = typed.iter().filter(|arg| !is_stream(arg)).nth(1) {
        cx.method_error(
            method.index,
            Error::new_spanned(
                extra,
                "service methods take at most one request argument; wrap several values in one message",
            ),
        );
    }
    let streams: Vec<_> = typed.iter().filter(|arg| is_stream(arg)).collect();
    if let Some(extra) = streams.get(1) {
        cx.method_error(
            method.index,
            Error::new_spanned(extra, "a method has at most one `ServerStream` argument"),
        );
    }
    // With two streams, the error above is the one that matters.
    if let ([stream], Some(last)) = (streams.as_slice(), typed.last()) {
        if !std::ptr::eq(**stream, *last) {
            cx.method_error(
                method.index,
                Error::new_spanned(
                    stream,
                    "the `ServerStream` argument comes last, after the request",
                ),
            );
        }
    }
}

/// The request is one owned message, taken by value: not a reference or other borrow,
/// not a trait, and not a stream of requests (client streaming is not supported).
fn check_request(cx: &mut Ctxt, method: &Method) {
    let Some((_, request)) = &method.request else {
        return;
    };
    if let Some(error) = not_owned(request, Role::Request) {
        cx.method_error(method.index, error);
    }
}

/// The return type is `Result<Response, Status>`, with an owned `Response`
/// (`Result<(), Status>` for a streaming method).
fn check_return(cx: &mut Ctxt, method: &Method) {
    let sig = &method.item.sig;
    let expected = if method.stream.is_some() {
        "`-> Result<(), Status>`: a streaming method's items go through its `ServerStream`"
    } else {
        "`-> Result<Response, Status>`"
    };
    let ty = match &sig.output {
        ReturnType::Type(_, ty) => ty,
        ReturnType::Default => {
            let span = sig.paren_token.span.close();
            let message = format!("missing return type; expected {expected}");
            return cx.method_error(method.index, Error::new(span, message));
        }
    };
    let Some((ok, err)) = &method.result else {
        let message = format!("expected {expected}");
        return cx.method_error(method.index, Error::new_spanned(ty, message));
    };
    let is_status = matches!(err, Type::Path(p)
        if p.path.segments.last().is_some_and(|s| s.ident == "Status"));
    if !is_status {
        cx.method_error(
            method.index,
            Error::new_spanned(err, "the error type must be `daemoneye_ipc::Status`"),
        );
    }
    if method.stream.is_none() {
        if let Some(error) = not_owned(ok, Role::Response) {
            cx.method_error(method.index, error);
        }
    }
}

/// A server-streaming method names one owned item type, `ServerStream<Item>`, and
/// returns `Result<(), Status>`: its answer is the items.
fn check_stream(cx: &mut Ctxt, method: &Method) {
    let Some(stream) = &method.stream else {
        return;
    };
    match &stream.item {
        None => cx.method_error(
            method.index,
            Error::new_spanned(
                &stream.ty,
                "expected `ServerStream<Item>` with one message type",
            ),
        ),
        Some(item) => {
            if let Some(error) = not_owned(item, Role::Item) {
                cx.method_error(method.index, error);
            }
        }
    }
    // A return type that is not `Result<_, Status>` at all is `check_return`'s.
    if let Some((ok, _)) = &method.result {
        if !matches!(ok, Type::Tuple(unit) if unit.elems.is_empty()) {
            cx.method_error(
                method.index,
                Error::new_spanned(
                    method.output(),
                    "a streaming method returns `Result<(), Status>`: its items go through the `ServerStream`",
                ),
            );
        }
    }
}

/// Methods have no default body: the implementation is the `impl`'s.
fn check_body(cx: &mut Ctxt, method: &Method) {
    if let Some(body) = &method.item.default {
        cx.method_error(
            method.index,
            Error::new_spanned(
                body,
                "service methods cannot have a default body; implement it in the `impl`",
            ),
        );
    }
}

/// Method ids start at 1, are unique in the service, and a default id (1 + the
/// previous method's) is left for every method without `#[ipc(id = N)]`.
fn check_ids(cx: &mut Ctxt, service: &Service) {
    let mut first: HashMap<u32, &Method> = HashMap::new();
    for method in &service.methods {
        match method.id {
            MethodId::Known(0) => cx.method_error(
                method.index,
                Error::new(method.id_span, "method ids start at 1"),
            ),
            MethodId::Known(id) => {
                let owner = *first.entry(id).or_insert(method);
                if owner.index != method.index {
                    let owner = &owner.ident;
                    cx.method_error(
                        method.index,
                        Error::new(
                            method.id_span,
                            format!("method id {id} is already used by `{owner}`"),
                        ),
                    );
                }
            }
            MethodId::Exhausted => cx.method_error(
                method.index,
                Error::new(
                    method.id_span,
                    "no method id is left after id 4294967295; pin this one with #[ipc(id = N)]",
                ),
            ),
            // Its `id` option is reported where it was read.
            MethodId::Unknown => cx.exclude(method.index),
        }
    }
}

/// At most one method is `#[ipc(bare)]`, and it is unary with a request: a seed-era
/// bare peer sends one request frame and expects one answer.
fn check_bare(cx: &mut Ctxt, service: &Service) {
    let mut first: Option<&Ident> = None;
    for method in &service.methods {
        let Some(span) = method.bare else { continue };
        if method.request.is_none() {
            cx.method_error(
                method.index,
                Error::new(
                    span,
                    "a `bare` method must take a request: bare peers send one",
                ),
            );
        }
        if method.stream.is_some() {
            cx.method_error(
                method.index,
                Error::new(
                    span,
                    "a `bare` method cannot stream: bare peers expect one answer",
                ),
            );
        }
        match first {
            Some(first) => cx.method_error(
                method.index,
                Error::new(
                    span,
                    format!("only one method can be `bare`; `{first}` already is"),
                ),
            ),
            None => first = Some(&method.ident),
        }
    }
}

/// Which message a type is, for the wording of errors.
#[derive(Clone, Copy)]
enum Role {
    Request,
    Response,
    Item,
}

impl Role {
    /// How the message is passed, e.g. "requests are taken by value".
    fn by_value(self) -> &'static str {
        match self {
            Role::Request => "requests are taken by value",
            Role::Response => "responses are returned by value",
            Role::Item => "stream items are sent by value",
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Role::Request => "requests",
            Role::Response => "responses",
            Role::Item => "stream items",
        }
    }
}

/// An error at the first part of `ty` that keeps it from being one owned message type,
/// saying what to write instead; `None` when `ty` may be one.
fn not_owned(ty: &Type, role: Role) -> Option<Error> {
    match ty {
        Type::Paren(inner) => not_owned(&inner.elem, role),
        Type::Group(inner) => not_owned(&inner.elem, role),
        Type::Reference(reference) => Some(borrowed(ty, &reference.elem, role)),
        Type::Ptr(pointer) => Some(borrowed(ty, &pointer.elem, role)),
        Type::ImplTrait(_) | Type::TraitObject(_) => Some(Error::new_spanned(
            ty,
            format!(
                "{} are one concrete message type: write the message's type, not a trait",
                role.plural()
            ),
        )),
        Type::Tuple(tuple) if !tuple.elems.is_empty() => Some(Error::new_spanned(
            ty,
            format!(
                "{} are one message: wrap several values in one message",
                role.plural()
            ),
        )),
        Type::Array(array) => not_owned(&array.elem, role),
        Type::Slice(slice) => not_owned(&slice.elem, role),
        Type::Path(path) => {
            let last = path.path.segments.last()?;
            if matches!(role, Role::Request) && last.ident == "Streaming" {
                return Some(Error::new_spanned(
                    ty,
                    "client streaming is not supported: take one request message \
                     (a repeated field carries many values)",
                ));
            }
            path.path.segments.iter().find_map(|segment| {
                let PathArguments::AngleBracketed(args) = &segment.arguments else {
                    return None;
                };
                args.args.iter().find_map(|arg| match arg {
                    GenericArgument::Lifetime(lifetime) => {
                        Some(borrowed_lifetime(ty, segment, lifetime, role))
                    }
                    GenericArgument::Type(inner) => not_owned(inner, role),
                    _ => None,
                })
            })
        }
        _ => None,
    }
}

/// `&T` or `*const T` where an owned `T` belongs.
fn borrowed(ty: &Type, owned: &Type, role: Role) -> Error {
    Error::new_spanned(
        ty,
        format!(
            "{}: write `{}` instead of `{}`",
            role.by_value(),
            pretty(owned),
            pretty(ty)
        ),
    )
}

/// A type that borrows through a lifetime argument, e.g. `Cow<'a, T>`.
fn borrowed_lifetime(
    ty: &Type,
    segment: &syn::PathSegment,
    lifetime: &syn::Lifetime,
    role: Role,
) -> Error {
    // `Cow<'a, T>`: the owned form is `T`.
    let owned = match &segment.arguments {
        PathArguments::AngleBracketed(args) if segment.ident == "Cow" => {
            args.args.iter().find_map(|arg| match arg {
                GenericArgument::Type(owned) => Some(owned),
                _ => None,
            })
        }
        _ => None,
    };
    match owned {
        Some(owned) => borrowed(ty, owned, role),
        None => Error::new(
            lifetime.span(),
            format!(
                "{}: write a type that owns its data, without the lifetime `{lifetime}`",
                role.by_value()
            ),
        ),
    }
}

/// `ty` as the user would write it, for messages: `&'a Ping`, `Cow<'a, Ping>`.
fn pretty(ty: &Type) -> String {
    let spaced = quote::ToTokens::to_token_stream(ty).to_string();
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let chars: Vec<char> = spaced.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if c == ' ' {
            let before = out.chars().last().is_some_and(word);
            let after = chars
                .get(i + 1)
                .is_some_and(|&next| word(next) || next == '\'');
            if !(before && after) {
                continue;
            }
        }
        out.push(c);
        if c == ',' {
            out.push(' ');
        }
    }
    out
}
