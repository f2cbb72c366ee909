//! The model of a service trait, parsed from syn's syntax tree.

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::{
    spanned::Spanned, Attribute, Error, FnArg, GenericArgument, Ident, ItemTrait, LitInt, LitStr,
    Pat, PathArguments, Result, ReturnType, TraitItem, TraitItemFn, Type,
};

/// A service: one annotated trait.
pub struct Service {
    /// The trait as written, minus our helper attributes.
    pub item: ItemTrait,
    /// Wire name, checked in the handshake.
    pub name: String,
    /// The trait's doc comment.
    pub doc: String,
    /// `descriptors = EXPR`: the encoded protobuf `FileDescriptorSet` (with source info)
    /// that the messages were generated from, for full schemas.
    pub descriptors: Option<syn::Expr>,
    pub methods: Vec<Method>,
}

/// One method of the trait.
pub struct Method {
    pub ident: Ident,
    pub doc: String,
    pub id: u32,
    /// Where the id came from (the `#[ipc(id = ..)]` literal, or the method name).
    pub id_span: Span,
    /// `#[ipc(idempotent)]`: safe to run twice, so a client may retry it.
    pub idempotent: bool,
    /// `#[ipc(bare)]`: also answers seed-era bare request frames; the keyword's span.
    pub bare: Option<Span>,
    /// The request argument's pattern and type; `None` for a method without request.
    pub request: Option<(Box<Pat>, Box<Type>)>,
    /// For a server-streaming method, its `ServerStream<Item>` argument.
    pub stream: Option<StreamArg>,
    /// `Resp` of `Result<Resp, Status>`; for a streaming method, its item type.
    pub response: Type,
    /// The whole return type, `Result<Resp, Status>` as written.
    pub output: Box<Type>,
    /// The declaration as written (for validation spans and re-emission).
    pub item: TraitItemFn,
}

impl Service {
    pub fn from_syn(args: TokenStream, mut item: ItemTrait) -> Result<Self> {
        let mut name = item.ident.to_string();
        let mut descriptors = None;
        if !args.is_empty() {
            let parser = syn::meta::parser(|meta| {
                if meta.path.is_ident("name") {
                    let value: LitStr = meta.value()?.parse()?;
                    if value.value().trim().is_empty() {
                        return Err(Error::new_spanned(value, "service name must not be empty"));
                    }
                    name = value.value();
                    Ok(())
                } else if meta.path.is_ident("descriptors") {
                    descriptors = Some(meta.value()?.parse::<syn::Expr>()?);
                    Ok(())
                } else {
                    Err(meta
                        .error("unknown option; expected `name = \"...\"` or `descriptors = PATH`"))
                }
            });
            syn::parse::Parser::parse2(parser, args)?;
        }
        let doc = doc_of(&item.attrs);
        let mut methods = Vec::new();
        let mut errors: Option<Error> = None;
        // `None` once a method took id u32::MAX: no default id is left after it.
        let mut next_id = Some(1u32);
        for trait_item in &mut item.items {
            let TraitItem::Fn(function) = trait_item else {
                push(
                    &mut errors,
                    Error::new_spanned(
                        &*trait_item,
                        "#[ipc_service] traits may contain only methods",
                    ),
                );
                continue;
            };
            match Method::from_syn(function, next_id) {
                Ok(method) => {
                    next_id = method.id.checked_add(1);
                    methods.push(method);
                }
                Err(error) => push(&mut errors, error),
            }
        }
        if let Some(errors) = errors {
            return Err(errors);
        }
        Ok(Self {
            item,
            name,
            doc,
            descriptors,
            methods,
        })
    }
}

impl Method {
    /// Reads the method, removing its `#[ipc(...)]` attribute from `function`.
    fn from_syn(function: &mut TraitItemFn, default_id: Option<u32>) -> Result<Self> {
        let mut id = None;
        let mut idempotent = false;
        let mut bare = None;
        let mut kept = Vec::new();
        for attr in function.attrs.drain(..) {
            if !attr.path().is_ident("ipc") {
                kept.push(attr);
                continue;
            }
            attr.parse_nested_meta(|meta| {
                let duplicate = || meta.error("this option is already given for this method");
                if meta.path.is_ident("id") {
                    let lit: LitInt = meta.value()?.parse()?;
                    if id.is_some() {
                        return Err(Error::new_spanned(
                            &meta.path,
                            "`id` is already given for this method",
                        ));
                    }
                    id = Some((lit.base10_parse::<u32>()?, lit.span()));
                    Ok(())
                } else if meta.path.is_ident("idempotent") {
                    if idempotent {
                        return Err(duplicate());
                    }
                    idempotent = true;
                    Ok(())
                } else if meta.path.is_ident("bare") {
                    if bare.is_some() {
                        return Err(duplicate());
                    }
                    bare = Some(meta.path.span());
                    Ok(())
                } else {
                    Err(meta.error("unknown option; expected `id = N`, `idempotent` or `bare`"))
                }
            })?;
        }
        function.attrs = kept;
        let sig = &function.sig;
        let mut inputs = sig.inputs.iter();
        // Receiver checks are in `valid`; here only the shape needed to build the model.
        let _receiver = inputs.next();
        // Argument counts and order are checked in `valid`; here the first non-stream
        // argument is the request and a `ServerStream<..>` one makes the method stream.
        let mut request = None;
        let mut stream = None;
        for input in inputs {
            match input {
                FnArg::Typed(arg) => match StreamArg::from_type(&arg.ty) {
                    Some(found) => stream = stream.or(Some(found)),
                    None if request.is_none() => request = Some((arg.pat.clone(), arg.ty.clone())),
                    None => {}
                },
                FnArg::Receiver(receiver) => {
                    return Err(Error::new_spanned(receiver, "unexpected receiver"))
                }
            }
        }
        let (output, mut response) = response_type(sig)?;
        if let Some(item) = stream.as_ref().and_then(|s| s.item.clone()) {
            response = item;
        }
        let (id, id_span) = match (id, default_id) {
            (Some(pinned), _) => pinned,
            (None, Some(next)) => (next, sig.ident.span()),
            (None, None) => {
                return Err(Error::new_spanned(
                    &sig.ident,
                    "no method id is left after the previous method's id 4294967295; \
                     pin this one with #[ipc(id = N)]",
                ))
            }
        };
        Ok(Self {
            ident: sig.ident.clone(),
            doc: doc_of(&function.attrs),
            id,
            id_span,
            idempotent,
            bare,
            request,
            stream,
            response,
            output,
            item: function.clone(),
        })
    }
}

/// The `tx: ServerStream<Item>` argument of a server-streaming method.
pub struct StreamArg {
    /// The whole argument type as written (for spans).
    pub ty: Box<Type>,
    /// `Item`, when exactly one type argument is given.
    pub item: Option<Type>,
}

impl StreamArg {
    /// `Some` when `ty` names `ServerStream<..>` (by its last path segment, so that
    /// `daemoneye_ipc::ServerStream<T>` and an imported `ServerStream<T>` both count).
    fn from_type(ty: &Type) -> Option<Self> {
        let Type::Path(path) = ty else { return None };
        let last = path.path.segments.last()?;
        if last.ident != "ServerStream" {
            return None;
        }
        let item = match &last.arguments {
            PathArguments::AngleBracketed(args) if args.args.len() == 1 => {
                match args.args.first() {
                    Some(GenericArgument::Type(item)) => Some(item.clone()),
                    _ => None,
                }
            }
            _ => None,
        };
        Some(Self {
            ty: Box::new(ty.clone()),
            item,
        })
    }
}

/// The return type `Result<Resp, Status>` and its `Resp`.
fn response_type(sig: &syn::Signature) -> Result<(Box<Type>, Type)> {
    const EXPECTED: &str = "expected `-> Result<Response, Status>`";
    let ty = match &sig.output {
        ReturnType::Type(_, ty) => ty,
        ReturnType::Default => {
            return Err(Error::new(
                sig.paren_token.span.close(),
                "missing return type; expected `-> Result<Response, Status>`",
            ))
        }
    };
    let Type::Path(path) = &**ty else {
        return Err(Error::new_spanned(ty, EXPECTED));
    };
    let Some(last) = path.path.segments.last() else {
        return Err(Error::new_spanned(ty, EXPECTED));
    };
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return Err(Error::new_spanned(ty, EXPECTED));
    };
    let types: Vec<&Type> = args
        .args
        .iter()
        .filter_map(|arg| match arg {
            GenericArgument::Type(ty) => Some(ty),
            _ => None,
        })
        .collect();
    if last.ident != "Result" || types.len() != 2 || args.args.len() != 2 {
        return Err(Error::new_spanned(ty, EXPECTED));
    }
    let is_status = matches!(types[1], Type::Path(p)
        if p.path.segments.last().is_some_and(|s| s.ident == "Status"));
    if !is_status {
        return Err(Error::new_spanned(
            types[1],
            "the error type must be `daemoneye_ipc::Status`",
        ));
    }
    Ok((ty.clone(), types[0].clone()))
}

/// The doc comment in `attrs`, with rustdoc's leading space removed from each line.
fn doc_of(attrs: &[Attribute]) -> String {
    let lines: Vec<String> = attrs
        .iter()
        .filter(|attr| attr.path().is_ident("doc"))
        .filter_map(|attr| match &attr.meta {
            syn::Meta::NameValue(nv) => match &nv.value {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s),
                    ..
                }) => Some(s.value()),
                _ => None,
            },
            _ => None,
        })
        .map(|line| {
            line.strip_prefix(' ')
                .unwrap_or(&line)
                .trim_end()
                .to_owned()
        })
        .collect();
    lines.join("\n").trim().to_owned()
}

/// The type as one compact string, e.g. `daemoneye_proto::ProcessList`.
pub fn type_name(ty: &Type) -> String {
    ty.to_token_stream()
        .to_string()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect()
}

pub fn push(errors: &mut Option<Error>, error: Error) {
    match errors {
        Some(errors) => errors.combine(error),
        None => *errors = Some(error),
    }
}
