//! The model of a service trait, read from syn's syntax tree.
//!
//! Reading is lenient: a malformed option is reported to the [`Ctxt`] and reading goes
//! on, and every method gets a model whatever its shape, so that one mistake never hides
//! another. Whether the model makes sense is `valid`'s business.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::ToTokens;
use syn::{
    meta::ParseNestedMeta, spanned::Spanned, Attribute, Error, Expr, FnArg, GenericArgument, Ident,
    ItemTrait, Lit, LitStr, Pat, PathArguments, Result, ReturnType, Token, TraitItem, TraitItemFn,
    Type,
};

use crate::ctxt::Ctxt;

/// A service: one annotated trait.
#[derive(Clone)]
pub struct Service {
    /// The trait as written, minus our `#[ipc(..)]` helper attributes.
    pub item: ItemTrait,
    /// Wire name, checked in the handshake.
    pub name: String,
    /// The `name = "..."` literal, when one is given.
    pub name_lit: Option<LitStr>,
    /// The trait's doc comment.
    pub doc: String,
    /// `descriptors = EXPR`: the encoded protobuf `FileDescriptorSet` (with source info)
    /// that the messages were generated from, for full schemas.
    pub descriptors: Option<Expr>,
    /// One per `fn` item of the trait, in order.
    pub methods: Vec<Method>,
}

/// One method of the trait, whatever its shape.
#[derive(Clone)]
pub struct Method {
    /// Position in `Service::methods`.
    pub index: usize,
    pub ident: Ident,
    pub doc: String,
    pub id: MethodId,
    /// Where the id came from (the `#[ipc(id = ..)]` literal, or the method name).
    pub id_span: Span,
    /// `#[ipc(idempotent)]`: safe to run twice, so a client may retry it.
    pub idempotent: bool,
    /// `#[ipc(bare)]`: also answers seed-era bare request frames; the keyword's span.
    pub bare: Option<Span>,
    /// The first argument after the receiver that is not a `ServerStream`: its pattern
    /// and type. `None` for a method without request.
    pub request: Option<(Box<Pat>, Box<Type>)>,
    /// For a server-streaming method, its (first) `ServerStream<..>` argument.
    pub stream: Option<StreamArg>,
    /// `(Ok, Err)` when the return type is written `Result<Ok, Err>`.
    pub result: Option<(Type, Type)>,
    /// The declaration as written, minus `#[ipc(..)]` (for spans and re-emission).
    pub item: TraitItemFn,
}

/// A method's wire id.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum MethodId {
    /// Pinned with `#[ipc(id = N)]`, or 1 + the previous method's id.
    Known(u32),
    /// No default is left: a previous method took id `u32::MAX`.
    Exhausted,
    /// Follows an `id` that could not be read (already reported).
    Unknown,
}

/// The `tx: ServerStream<Item>` argument of a server-streaming method.
#[derive(Clone)]
pub struct StreamArg {
    /// The whole argument type as written (for spans).
    pub ty: Box<Type>,
    /// `Item`, when exactly one type argument is given.
    pub item: Option<Type>,
}

/// A method's `#[ipc(..)]` options, as read.
#[derive(Default)]
struct Options {
    id: Option<Pin>,
    idempotent: bool,
    bare: Option<Span>,
}

/// An `id = ..` option.
enum Pin {
    Given(u32, Span),
    /// Present but unreadable (already reported).
    Invalid,
}

impl Service {
    /// Reads the trait and the attribute's arguments, removing every `#[ipc(..)]`
    /// attribute from `item`. Errors go to `cx`; the model is built anyway.
    pub fn from_syn(cx: &mut Ctxt, args: TokenStream, mut item: ItemTrait) -> Self {
        let mut name = None;
        let mut descriptors = None;
        let parser = syn::meta::parser(|meta| {
            if meta.path.is_ident("name") {
                if name.is_some() {
                    cx.error(Error::new_spanned(&meta.path, "`name` is already given"));
                    return skip_value(&meta);
                }
                match meta.value()?.parse::<Expr>()? {
                    Expr::Lit(syn::ExprLit {
                        lit: Lit::Str(lit), ..
                    }) => name = Some(lit),
                    other => cx.error(Error::new_spanned(
                        other,
                        "expected a string, e.g. `name = \"pkg.Service\"`",
                    )),
                }
            } else if meta.path.is_ident("descriptors") {
                if descriptors.is_some() {
                    cx.error(Error::new_spanned(
                        &meta.path,
                        "`descriptors` is already given",
                    ));
                    return skip_value(&meta);
                }
                descriptors = Some(meta.value()?.parse::<Expr>()?);
            } else {
                cx.error(
                    meta.error("unknown option; expected `name = \"...\"` or `descriptors = PATH`"),
                );
                return skip_value(&meta);
            }
            Ok(())
        });
        if let Err(error) = syn::parse::Parser::parse2(parser, args) {
            cx.error(error);
        }

        let mut methods = Vec::new();
        let mut next_id = MethodId::Known(1);
        for trait_item in &mut item.items {
            let TraitItem::Fn(function) = trait_item else {
                // Not a method (`valid` says so); kept as written, minus our attributes.
                if let Some(attrs) = attrs_mut(trait_item) {
                    attrs.retain(|attr| !attr.path().is_ident("ipc"));
                }
                continue;
            };
            let index = methods.len();
            let options = Options::take(cx, index, &mut function.attrs);
            let (id, id_span) = match options.id {
                Some(Pin::Given(id, span)) => (MethodId::Known(id), span),
                Some(Pin::Invalid) => (MethodId::Unknown, function.sig.ident.span()),
                None => (next_id, function.sig.ident.span()),
            };
            next_id = match id {
                MethodId::Known(id) => id
                    .checked_add(1)
                    .map_or(MethodId::Exhausted, MethodId::Known),
                other => other,
            };
            methods.push(Method::from_syn(index, function, id, id_span, options));
        }

        Self {
            name: name
                .as_ref()
                .map_or_else(|| item.ident.to_string(), LitStr::value),
            name_lit: name,
            doc: doc_of(&item.attrs),
            descriptors,
            methods,
            item,
        }
    }
}

impl Method {
    fn from_syn(
        index: usize,
        function: &TraitItemFn,
        id: MethodId,
        id_span: Span,
        options: Options,
    ) -> Self {
        let sig = &function.sig;
        let mut request = None;
        let mut stream = None;
        for input in &sig.inputs {
            if let FnArg::Typed(arg) = input {
                match StreamArg::from_type(&arg.ty) {
                    Some(found) => stream = stream.or(Some(found)),
                    None if request.is_none() => request = Some((arg.pat.clone(), arg.ty.clone())),
                    None => {}
                }
            }
        }
        Self {
            index,
            ident: sig.ident.clone(),
            doc: doc_of(&function.attrs),
            id,
            id_span,
            idempotent: options.idempotent,
            bare: options.bare,
            request,
            stream,
            result: result_types(&sig.output),
            item: function.clone(),
        }
    }

    /// The wire id of a method that passed `valid`.
    pub fn wire_id(&self) -> u32 {
        match self.id {
            MethodId::Known(id) => id,
            MethodId::Exhausted | MethodId::Unknown => unreachable!("rejected by valid::check_ids"),
        }
    }

    /// `Resp` of a unary method or `Item` of a streaming one, for a method that passed
    /// `valid`.
    pub fn response(&self) -> &Type {
        let response = match &self.stream {
            Some(stream) => stream.item.as_ref(),
            None => self.result.as_ref().map(|(ok, _)| ok),
        };
        response.unwrap_or_else(|| unreachable!("rejected by valid::check_return"))
    }

    /// The whole return type as written (`()` when none is).
    pub fn output(&self) -> Type {
        match &self.item.sig.output {
            ReturnType::Type(_, ty) => (**ty).clone(),
            ReturnType::Default => syn::parse_quote!(()),
        }
    }
}

impl Options {
    /// Reads and removes every `#[ipc(..)]` attribute in `attrs`.
    fn take(cx: &mut Ctxt, index: usize, attrs: &mut Vec<Attribute>) -> Self {
        let mut options = Self::default();
        attrs.retain(|attr| {
            if !attr.path().is_ident("ipc") {
                return true;
            }
            if let Err(error) = attr.parse_nested_meta(|meta| options.read(cx, index, &meta)) {
                cx.method_error(index, error);
                // What followed in the attribute is unknown, the id included.
                options.id.get_or_insert(Pin::Invalid);
            }
            false
        });
        options
    }

    /// One option; a well-formed but wrong one is reported and reading goes on.
    fn read(&mut self, cx: &mut Ctxt, index: usize, meta: &ParseNestedMeta) -> Result<()> {
        if meta.path.is_ident("id") {
            if self.id.is_some() {
                cx.method_error(
                    index,
                    Error::new_spanned(&meta.path, "`id` is already given for this method"),
                );
                return skip_value(meta);
            }
            let value: Expr = meta.value()?.parse()?;
            let id = match &value {
                Expr::Lit(syn::ExprLit {
                    lit: Lit::Int(lit), ..
                }) => lit
                    .base10_parse::<u32>()
                    .map(|id| Pin::Given(id, lit.span()))
                    .map_err(|_| {
                        Error::new(lit.span(), "method ids are integers from 1 to 4294967295")
                    }),
                _ => Err(Error::new_spanned(
                    &value,
                    "expected an integer method id, e.g. `id = 3`",
                )),
            };
            self.id = Some(id.unwrap_or_else(|error| {
                cx.method_error(index, error);
                Pin::Invalid
            }));
        } else if meta.path.is_ident("idempotent") {
            if self.idempotent {
                cx.method_error(
                    index,
                    meta.error("this option is already given for this method"),
                );
            }
            self.idempotent = true;
        } else if meta.path.is_ident("bare") {
            if self.bare.is_some() {
                cx.method_error(
                    index,
                    meta.error("this option is already given for this method"),
                );
            }
            self.bare = Some(meta.path.span());
        } else {
            cx.method_error(
                index,
                meta.error("unknown option; expected `id = N`, `idempotent` or `bare`"),
            );
            return skip_value(meta);
        }
        Ok(())
    }
}

/// Consumes what follows an option's name (`= value` or `(..)`), so that reading can
/// go on after an option that is reported.
fn skip_value(meta: &ParseNestedMeta) -> Result<()> {
    if meta.input.peek(Token![=]) {
        meta.value()?.parse::<Expr>()?;
    } else if meta.input.peek(syn::token::Paren) {
        meta.input.parse::<TokenTree>()?;
    }
    Ok(())
}

/// The attributes of a trait item that is not a method.
fn attrs_mut(item: &mut TraitItem) -> Option<&mut Vec<Attribute>> {
    match item {
        TraitItem::Const(item) => Some(&mut item.attrs),
        TraitItem::Type(item) => Some(&mut item.attrs),
        TraitItem::Macro(item) => Some(&mut item.attrs),
        _ => None,
    }
}

impl StreamArg {
    /// `Some` when `ty` names `ServerStream<..>` (by its last path segment, so that
    /// `daemoneye_ipc::ServerStream<T>` and an imported `ServerStream<T>` both count).
    pub fn from_type(ty: &Type) -> Option<Self> {
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

/// `(Ok, Err)` when `output` is written `Result<Ok, Err>` (by the last path segment).
fn result_types(output: &ReturnType) -> Option<(Type, Type)> {
    let ReturnType::Type(_, ty) = output else {
        return None;
    };
    let Type::Path(path) = &**ty else { return None };
    let last = path.path.segments.last()?;
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    if last.ident != "Result" || args.args.len() != 2 {
        return None;
    }
    match (&args.args[0], &args.args[1]) {
        (GenericArgument::Type(ok), GenericArgument::Type(err)) => Some((ok.clone(), err.clone())),
        _ => None,
    }
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
