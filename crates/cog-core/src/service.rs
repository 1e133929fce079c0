//! What every cog middleware offers around its inner service.

/// Adds `get_ref`, `get_mut` and `into_inner` to a middleware whose inner
/// service is its field `inner` (of type `S`, its first type parameter),
/// as tower's middleware do:
///
/// ```
/// struct Logging<S> {
///     inner: S,
/// }
/// cog_core::inner_service!(Logging<S>);
///
/// let mut mw = Logging { inner: 7 };
/// assert_eq!(*mw.get_ref(), 7);
/// *mw.get_mut() = 8;
/// assert_eq!(mw.into_inner(), 8);
/// ```
#[macro_export]
macro_rules! inner_service {
    ($name:ident < S $(, $param:ident)* >) => {
        impl<S $(, $param)*> $name<S $(, $param)*> {
            /// The inner service.
            pub fn get_ref(&self) -> &S {
                &self.inner
            }

            /// The inner service, mutably.
            pub fn get_mut(&mut self) -> &mut S {
                &mut self.inner
            }

            /// Consumes the middleware, returning the inner service.
            pub fn into_inner(self) -> S {
                self.inner
            }
        }
    };
}
