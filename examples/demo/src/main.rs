//! The cog demo's binary: see the library's docs.

#[tokio::main]
async fn main() -> Result<(), example_demo::app::Error> {
    example_demo::serve::run().await
}
