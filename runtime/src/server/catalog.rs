//! What one endpoint serves: its primary service, dispatched statically (the hot path,
//! no allocation per call), and other services beside it — added with
//! [`Server::add_service`](super::Server::add_service), and the built-in reflection
//! service — dispatched through boxed futures. The hello picks one per connection.

use std::{future::Future, pin::Pin, sync::Arc};

use bytes::Bytes;
use futures_util::future::Either;

use super::{ItemSink, Service};
use crate::{
    health::{self, HealthReporter, HealthServer},
    metrics::ServerMetrics,
    reflection::{self, ReflectionServer},
    IpcConfig, Reply, ServiceDescriptor, Status,
};

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An object-safe [`Service`], for services other than an endpoint's primary one.
pub(crate) trait DynService: Send + Sync + 'static {
    fn descriptor(&self) -> &'static ServiceDescriptor;
    fn call(&self, method_id: u32, payload: Bytes) -> BoxFuture<'_, Result<Reply, Status>>;
    fn call_stream(
        &self,
        method_id: u32,
        payload: Bytes,
        sink: ItemSink,
    ) -> BoxFuture<'_, Result<(), Status>>;
}

impl<S: Service> DynService for S {
    fn descriptor(&self) -> &'static ServiceDescriptor {
        Service::descriptor(self)
    }
    fn call(&self, method_id: u32, payload: Bytes) -> BoxFuture<'_, Result<Reply, Status>> {
        Box::pin(Service::call(self, method_id, payload))
    }
    fn call_stream(
        &self,
        method_id: u32,
        payload: Bytes,
        sink: ItemSink,
    ) -> BoxFuture<'_, Result<(), Status>> {
        Box::pin(Service::call_stream(self, method_id, payload, sink))
    }
}

/// The services of one endpoint.
pub(crate) struct Catalog<S> {
    pub(crate) primary: Arc<S>,
    pub(crate) others: Vec<Arc<dyn DynService>>,
    /// Every service's descriptor, the primary first (what the hello may name).
    descriptors: Vec<&'static ServiceDescriptor>,
}

impl<S: Service> Catalog<S> {
    /// Every descriptor an endpoint serving `primary` and `others` answers for: theirs,
    /// then the built-in reflection and health services'.
    pub(crate) fn served(
        primary: &S,
        others: &[Arc<dyn DynService>],
    ) -> Vec<&'static ServiceDescriptor> {
        let mut served: Vec<&'static ServiceDescriptor> = std::iter::once(primary.descriptor())
            .chain(others.iter().map(|other| other.descriptor()))
            .collect();
        served.push(ReflectionServer::<reflection::Served>::DESCRIPTOR);
        served.push(HealthServer::<health::Served>::DESCRIPTOR);
        served
    }

    /// `primary` and `others`, plus the built-in reflection and health services every
    /// endpoint answers. Also returns the names of all the services served.
    pub(crate) fn with_builtins(
        primary: Arc<S>,
        mut others: Vec<Arc<dyn DynService>>,
        health: &HealthReporter,
        config: &IpcConfig,
        metrics: &Arc<ServerMetrics>,
    ) -> (Arc<Self>, Vec<&'static str>) {
        let served = Self::served(&primary, &others);
        let names: Vec<&'static str> = served.iter().map(|s| s.name).collect();
        others.push(Arc::new(HealthServer::new(health::Served {
            reporter: health.clone(),
            services: names.clone(),
            metrics: metrics.clone(),
        })));
        others.push(Arc::new(ReflectionServer::new(reflection::Served::new(
            served.clone(),
            config,
        ))));
        let catalog = Catalog {
            primary,
            others,
            descriptors: served,
        };
        (Arc::new(catalog), names)
    }

    /// Every service's descriptor, the primary first.
    pub(crate) fn descriptors(&self) -> &[&'static ServiceDescriptor] {
        &self.descriptors
    }

    /// The service named `name`.
    pub(crate) fn select(&self, name: &str) -> Option<Selected<S>> {
        if self.primary.descriptor().name == name {
            return Some(Selected::Primary(self.primary.clone()));
        }
        self.others
            .iter()
            .find(|other| other.descriptor().name == name)
            .map(|other| Selected::Other(other.clone()))
    }
}

/// The service one connection talks to.
pub(crate) enum Selected<S> {
    Primary(Arc<S>),
    Other(Arc<dyn DynService>),
}

impl<S> Clone for Selected<S> {
    fn clone(&self) -> Self {
        match self {
            Selected::Primary(service) => Selected::Primary(service.clone()),
            Selected::Other(service) => Selected::Other(service.clone()),
        }
    }
}

impl<S: Service> Service for Selected<S> {
    fn descriptor(&self) -> &'static ServiceDescriptor {
        match self {
            Selected::Primary(service) => service.descriptor(),
            Selected::Other(service) => service.descriptor(),
        }
    }

    fn call(
        &self,
        method_id: u32,
        payload: Bytes,
    ) -> impl Future<Output = Result<Reply, Status>> + Send {
        match self {
            Selected::Primary(service) => Either::Left(service.call(method_id, payload)),
            Selected::Other(service) => Either::Right(service.call(method_id, payload)),
        }
    }

    fn call_stream(
        &self,
        method_id: u32,
        payload: Bytes,
        sink: ItemSink,
    ) -> impl Future<Output = Result<(), Status>> + Send {
        match self {
            Selected::Primary(service) => {
                Either::Left(service.call_stream(method_id, payload, sink))
            }
            Selected::Other(service) => {
                Either::Right(service.call_stream(method_id, payload, sink))
            }
        }
    }

    fn call_bare(
        &self,
        payload: Bytes,
    ) -> impl Future<Output = Option<Result<Bytes, Status>>> + Send {
        match self {
            Selected::Primary(service) => Either::Left(service.call_bare(payload)),
            Selected::Other(_) => Either::Right(std::future::ready(None)),
        }
    }
}
