//! Code generation: the trait, `FooClient` and `FooServer<T>` from a checked model; and
//! when the checks fail, the errors with what can be emitted without adding errors of
//! its own (the shape of `thiserror`'s fallback).

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::{parse_quote_spanned, spanned::Spanned, Error, Item, TraitItem, TraitItemFn};

use crate::ast::{type_name, Method, Service};
use crate::ctxt::{Ctxt, Rejection};
use crate::valid;

/// `#[ipc_service(args)]` on `item`: parse, check, expand.
pub fn ipc_service(args: TokenStream, item: Item) -> TokenStream {
    let Item::Trait(item) = item else {
        let error = Error::new_spanned(&item, "#[ipc_service] can only be applied to a trait")
            .into_compile_error();
        return quote! { #error #item };
    };
    let mut cx = Ctxt::default();
    let service = Service::from_syn(&mut cx, args, item);
    valid::check(&mut cx, &service);
    match cx.finish() {
        Ok(()) => {
            let trait_item = trait_item(&service, &[]);
            let generated = client_and_server(&service);
            quote! {
                #trait_item
                #generated
            }
        }
        Err(rejection) => fallback(&service, rejection),
    }
}

/// The errors; the user's trait, so that their `impl` blocks add no errors of their
/// own; and the client and server of the methods that are right, so that code using
/// them does not either. A generic trait gets no client or server: they could not
/// name it.
fn fallback(service: &Service, rejection: Rejection) -> TokenStream {
    let errors = rejection.errors.into_compile_error();
    let trait_item = trait_item(service, &rejection.faulty);
    let generics = &service.item.generics;
    let generated = if generics.params.is_empty() && generics.where_clause.is_none() {
        let mut sound = service.clone();
        sound
            .methods
            .retain(|method| !rejection.faulty.contains(&method.index));
        client_and_server(&sound)
    } else {
        TokenStream::new()
    };
    quote! {
        #errors
        #trait_item
        #generated
    }
}

fn client_and_server(service: &Service) -> TokenStream {
    let descriptor = descriptor(service);
    let client = client(service, &descriptor);
    let server = server(service);
    quote! {
        #client
        #server
    }
}

/// The trait as written, `Send + Sync + 'static`, with each method turned from `async fn`
/// into `fn -> impl Future + Send` so that servers can run handlers on a multi-threaded
/// runtime without boxing. The `faulty` methods (indexes into `service.methods`) are
/// kept as written instead, which any `impl` of them satisfies. Every token of a method
/// keeps its span, so that rustc's notes about a trait method point at the user's.
fn trait_item(service: &Service, faulty: &[usize]) -> TokenStream {
    let item = &service.item;
    let mut items = item.items.clone();
    let mut methods = service.methods.iter();
    for trait_item in &mut items {
        let TraitItem::Fn(function) = trait_item else {
            continue;
        };
        let Some(method) = methods.next() else { break };
        if faulty.contains(&method.index) {
            as_written(function);
        } else {
            *function = rewritten(method);
        }
    }
    let attrs = &item.attrs;
    let vis = &item.vis;
    let unsafety = &item.unsafety;
    let ident = &item.ident;
    let generics = &item.generics;
    let where_clause = &generics.where_clause;
    let supertraits = &item.supertraits;
    let plus = if supertraits.is_empty() {
        quote!()
    } else {
        quote!(+)
    };
    // The header's own tokens keep the macro's span, as rustc's lints expect of
    // generated code (an unused trait is not reported: its client may be all that is
    // used).
    quote! {
        #(#attrs)*
        #vis #unsafety trait #ident #generics: ::core::marker::Send + ::core::marker::Sync + 'static #plus #supertraits
        #where_clause
        {
            #(#items)*
        }
    }
}

/// `async fn m(..) -> R;` as `fn m(..) -> impl Future<Output = R> + Send;`, every
/// token at the user's span (the `;` included, which rustc's item span ends on).
fn rewritten(method: &Method) -> TraitItemFn {
    let mut function = method.item.clone();
    let output = method.output();
    let sig = &mut function.sig;
    sig.asyncness = None;
    let span = sig.output.span();
    sig.output = parse_quote_spanned! {span=>
        -> impl ::core::future::Future<Output = #output> + ::core::marker::Send
    };
    function
}

/// A method that breaks a rule, as written, minus what rustc rejects in a trait itself
/// (`const`, `extern`, `...`): those are already reported.
fn as_written(function: &mut TraitItemFn) {
    function.sig.constness = None;
    function.sig.abi = None;
    function.sig.variadic = None;
}

/// Contract fingerprint: first 8 bytes of SHA-256 over the service name and every
/// method's id, name, request and response message names (the last path segment of
/// the types as written) and, for streaming methods, a streaming mark.
fn schema_hash(service: &Service) -> u64 {
    let mut hasher = hmac_sha256::Hash::new();
    hasher.update(format!("service={}\n", service.name));
    let mut methods: Vec<&Method> = service.methods.iter().collect();
    methods.sort_by_key(|method| method.wire_id());
    for method in methods {
        // A streaming method is marked, so that it never matches a unary one; unary
        // methods hash as they always did.
        let streaming = if method.stream.is_some() {
            ":stream"
        } else {
            ""
        };
        hasher.update(format!(
            "method={}:{}:{}:{}{streaming}\n",
            method.wire_id(),
            method.ident,
            message_name(&request_name(method)),
            message_name(&type_name(method.response()))
        ));
    }
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The message name of a type as written: its last path segment (`a::b::Msg` -> `Msg`),
/// which is the protobuf message name for prost-generated types. Used so that spelling
/// a path differently does not change the contract.
fn message_name(type_name: &str) -> &str {
    type_name.rsplit("::").next().unwrap_or(type_name)
}

fn request_name(method: &Method) -> String {
    method
        .request
        .as_ref()
        .map_or_else(|| "()".to_owned(), |(_, ty)| type_name(ty))
}

fn descriptor(service: &Service) -> TokenStream {
    let name = &service.name;
    let doc = &service.doc;
    let hash = schema_hash(service);
    let descriptors = match &service.descriptors {
        Some(expr) => quote!(#expr),
        None => quote!(&[]),
    };
    let methods = service.methods.iter().map(|method| {
        let id = method.wire_id();
        let name = method.ident.to_string();
        let request = request_name(method);
        let response = type_name(method.response());
        let doc = &method.doc;
        let idempotent = method.idempotent;
        let bare = method.bare.is_some();
        let server_streaming = method.stream.is_some();
        quote! {
            ::daemoneye_ipc::MethodDescriptor {
                id: #id,
                name: #name,
                request: #request,
                response: #response,
                doc: #doc,
                client_streaming: false,
                server_streaming: #server_streaming,
                idempotent: #idempotent,
                bare: #bare,
            }
        }
    });
    quote! {
        &::daemoneye_ipc::ServiceDescriptor {
            name: #name,
            doc: #doc,
            methods: &[#(#methods),*],
            schema_hash: #hash,
            file_descriptor_set: #descriptors,
        }
    }
}

fn client(service: &Service, descriptor: &TokenStream) -> TokenStream {
    let vis = &service.item.vis;
    let trait_ident = &service.item.ident;
    let client = format_ident!("{}Client", trait_ident);
    let doc = format!(
        "Typed client for [`{trait_ident}`], generated by `#[ipc_service]`.\n\n\
         Cheap to clone; clones share one connection and may call concurrently."
    );
    let methods = service.methods.iter().map(|method| {
        let ident = &method.ident;
        let id = method.wire_id();
        let response = method.response();
        let attrs = method
            .item
            .attrs
            .iter()
            .filter(|attr| attr.path().is_ident("doc"));
        let span = method.ident.span();
        if method.stream.is_some() {
            let (args, request) = match &method.request {
                Some((_, ty)) => (quote!(request: #ty,), quote!(&request)),
                None => (quote!(), quote!(&())),
            };
            return quote_spanned! {span=>
                #(#attrs)*
                ///
                /// Server streaming: the answer is a stream of items, each
                /// `Result<Item, IpcError>`; dropping it cancels the call.
                pub async fn #ident(
                    &self,
                    #args
                ) -> ::core::result::Result<
                    ::daemoneye_ipc::Streaming<#response>,
                    ::daemoneye_ipc::IpcError,
                > {
                    self.inner.server_stream(#id, #request).await
                }
            };
        }
        match &method.request {
            Some((_, request)) => quote_spanned! {span=>
                #(#attrs)*
                pub async fn #ident(
                    &self,
                    request: #request,
                ) -> ::core::result::Result<#response, ::daemoneye_ipc::IpcError> {
                    self.inner.call(#id, &request).await
                }
            },
            None => quote_spanned! {span=>
                #(#attrs)*
                pub async fn #ident(
                    &self,
                ) -> ::core::result::Result<#response, ::daemoneye_ipc::IpcError> {
                    self.inner.call(#id, &()).await
                }
            },
        }
    });
    quote! {
        #[doc = #doc]
        #[derive(Clone, Debug)]
        #vis struct #client {
            inner: ::daemoneye_ipc::Client,
        }

        impl #client {
            /// The service's descriptor: name, methods, doc comments, contract hash.
            pub const DESCRIPTOR: &'static ::daemoneye_ipc::ServiceDescriptor = #descriptor;

            /// Connects to `config.endpoint_path` and performs the handshake.
            ///
            /// # Errors
            /// See [`daemoneye_ipc::Client::connect`].
            pub async fn connect(
                config: &::daemoneye_ipc::IpcConfig,
            ) -> ::core::result::Result<Self, ::daemoneye_ipc::IpcError> {
                ::daemoneye_ipc::Client::connect(config, Self::DESCRIPTOR)
                    .await
                    .map(|inner| Self { inner })
            }

            /// A client that connects on its first call and reconnects with backoff;
            /// see [`daemoneye_ipc::Client::lazy`].
            ///
            /// # Errors
            /// `Config` for an invalid configuration.
            pub fn lazy(
                config: &::daemoneye_ipc::IpcConfig,
            ) -> ::core::result::Result<Self, ::daemoneye_ipc::IpcError> {
                ::daemoneye_ipc::Client::lazy(config, Self::DESCRIPTOR).map(|inner| Self { inner })
            }

            /// Wraps an untyped client connected to this service.
            pub fn from_client(inner: ::daemoneye_ipc::Client) -> Self {
                Self { inner }
            }

            /// The untyped client underneath.
            pub fn client(&self) -> &::daemoneye_ipc::Client {
                &self.inner
            }

            /// This client with another per-call timeout (sent to the server as the
            /// call's deadline).
            pub fn with_timeout(self, timeout: ::core::time::Duration) -> Self {
                Self { inner: self.inner.with_timeout(timeout) }
            }

            /// This client with its untyped client reconfigured, e.g.
            /// `.configure(|c| c.with_circuit_breaker(Default::default()))`.
            pub fn configure(
                self,
                f: impl ::core::ops::FnOnce(::daemoneye_ipc::Client) -> ::daemoneye_ipc::Client,
            ) -> Self {
                Self { inner: f(self.inner) }
            }

            #(#methods)*
        }
    }
}

fn server(service: &Service) -> TokenStream {
    let vis = &service.item.vis;
    let trait_ident = &service.item.ident;
    let client = format_ident!("{}Client", trait_ident);
    let server = format_ident!("{}Server", trait_ident);
    let doc = format!(
        "Server dispatch for [`{trait_ident}`], generated by `#[ipc_service]`: routes \
         each request to the wrapped implementation.\n\n\
         Serve it with [`daemoneye_ipc::Server::bind`]."
    );
    let stream_arms = service
        .methods
        .iter()
        .filter(|method| method.stream.is_some())
        .map(|method| {
            let ident = &method.ident;
            let id = method.wire_id();
            let item = method.response();
            let stream = quote! { ::daemoneye_ipc::ServerStream::<#item>::new(sink) };
            let call = match &method.request {
                Some((_, request)) => quote! {
                    let request = ::daemoneye_ipc::__private::decode_request::<#request>(payload)?;
                    <T as #trait_ident>::#ident(&self.inner, request, #stream).await
                },
                None => quote! {
                    let _ = payload;
                    <T as #trait_ident>::#ident(&self.inner, #stream).await
                },
            };
            quote! { #id => { #call } }
        });
    let arms = service
        .methods
        .iter()
        .filter(|method| method.stream.is_none())
        .map(|method| {
            let ident = &method.ident;
            let id = method.wire_id();
            let call = match &method.request {
                Some((_, request)) => quote! {
                    let request = ::daemoneye_ipc::__private::decode_request::<#request>(payload)?;
                    let response = <T as #trait_ident>::#ident(&self.inner, request).await?;
                },
                None => quote! {
                    let _ = payload;
                    let response = <T as #trait_ident>::#ident(&self.inner).await?;
                },
            };
            quote! {
                #id => {
                    #call
                    ::core::result::Result::Ok(::daemoneye_ipc::__private::reply(response))
                }
            }
        });
    let call_bare = service.methods.iter().find(|m| m.bare.is_some()).map(|method| {
        let ident = &method.ident;
        let request = method.request.as_ref().map(|(_, ty)| ty);
        quote! {
            fn call_bare(
                &self,
                payload: ::daemoneye_ipc::__private::Bytes,
            ) -> impl ::core::future::Future<
                Output = ::core::option::Option<
                    ::core::result::Result<::daemoneye_ipc::__private::Bytes, ::daemoneye_ipc::Status>,
                >,
            > + ::core::marker::Send {
                async move {
                    let request = match ::daemoneye_ipc::__private::decode_request::<#request>(payload) {
                        ::core::result::Result::Ok(request) => request,
                        ::core::result::Result::Err(status) => {
                            return ::core::option::Option::Some(::core::result::Result::Err(status))
                        }
                    };
                    ::core::option::Option::Some(
                        <T as #trait_ident>::#ident(&self.inner, request)
                            .await
                            .map(|response| ::daemoneye_ipc::__private::encode_response(&response)),
                    )
                }
            }
        }
    });
    // One error, at the user's item type, when it cannot be a stream item.
    let item_checks = service
        .methods
        .iter()
        .filter(|method| method.stream.is_some())
        .map(|method| {
            let item = method.response();
            quote_spanned! {item.span()=>
                const _: fn() = ::daemoneye_ipc::__private::assert_stream_item::<#item>;
            }
        });
    quote! {
        #(#item_checks)*

        #[doc = #doc]
        #vis struct #server<T> {
            inner: ::std::sync::Arc<T>,
        }

        impl<T: #trait_ident> #server<T> {
            /// The service's descriptor (the same as the client's).
            pub const DESCRIPTOR: &'static ::daemoneye_ipc::ServiceDescriptor = #client::DESCRIPTOR;

            /// Dispatch to `inner`.
            pub fn new(inner: T) -> Self {
                Self { inner: ::std::sync::Arc::new(inner) }
            }

            /// Dispatch to a shared implementation.
            pub fn from_arc(inner: ::std::sync::Arc<T>) -> Self {
                Self { inner }
            }

            /// The wrapped implementation.
            pub fn get_ref(&self) -> &T {
                &self.inner
            }
        }

        impl<T> ::core::clone::Clone for #server<T> {
            fn clone(&self) -> Self {
                Self { inner: ::std::sync::Arc::clone(&self.inner) }
            }
        }

        impl<T> ::core::fmt::Debug for #server<T> {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_struct(stringify!(#server)).finish_non_exhaustive()
            }
        }

        impl<T: #trait_ident> ::daemoneye_ipc::Service for #server<T> {
            fn descriptor(&self) -> &'static ::daemoneye_ipc::ServiceDescriptor {
                #client::DESCRIPTOR
            }

            fn call(
                &self,
                method_id: u32,
                payload: ::daemoneye_ipc::__private::Bytes,
            ) -> impl ::core::future::Future<
                Output = ::core::result::Result<::daemoneye_ipc::Reply, ::daemoneye_ipc::Status>,
            > + ::core::marker::Send {
                async move {
                    match method_id {
                        #(#arms)*
                        _ => ::core::result::Result::Err(::daemoneye_ipc::Status::unimplemented(
                            ::std::format!(
                                "method id {} is not part of {}",
                                method_id,
                                #client::DESCRIPTOR.name,
                            ),
                        )),
                    }
                }
            }

            fn call_stream(
                &self,
                method_id: u32,
                payload: ::daemoneye_ipc::__private::Bytes,
                sink: ::daemoneye_ipc::server::ItemSink,
            ) -> impl ::core::future::Future<
                Output = ::core::result::Result<(), ::daemoneye_ipc::Status>,
            > + ::core::marker::Send {
                async move {
                    match method_id {
                        #(#stream_arms)*
                        _ => {
                            let _ = (payload, sink);
                            ::core::result::Result::Err(::daemoneye_ipc::Status::unimplemented(
                                ::std::format!(
                                    "method id {} is not a streaming method of {}",
                                    method_id,
                                    #client::DESCRIPTOR.name,
                                ),
                            ))
                        }
                    }
                }
            }

            #call_bare
        }
    }
}
