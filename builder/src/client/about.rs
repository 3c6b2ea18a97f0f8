//! `berth-build version` and `berth-build info`: this client, and with
//! `--addr` the daemon it talks to (its Version and Info RPCs), as
//! `docker version` / `docker info` show both sides.
use super::{remote::Remote, Cli, RegistryAccess};
use anyhow::Result;
use berth_proto::v1 as pb;

pub fn version(cli: &Cli) -> Result<()> {
    let me = crate::daemon::info::version();
    println!("Client:");
    print_version(&me);
    if let Some(addr) = &cli.addr {
        let v = Remote::connect(addr, RegistryAccess::from_cli(cli))?.version()?;
        println!("Server (berth-buildd at {addr}):");
        print_version(&v);
    }
    Ok(())
}

fn print_version(v: &pb::VersionResponse) {
    println!(" Version:     {}", v.version);
    println!(" API version: {}", v.api_version);
    if !v.git_commit.is_empty() {
        println!(" Git commit:  {}", v.git_commit);
    }
    println!(" OS/Arch:     {}/{}", v.os, v.arch);
}

pub fn info(cli: &Cli) -> Result<()> {
    let i = match &cli.addr {
        Some(addr) => Remote::connect(addr, RegistryAccess::from_cli(cli))?.info()?,
        None => {
            // The in-process engine: the same facts about the local store.
            let store = crate::store::Store::open(&cli.root)?;
            let runtime = crate::exec::run::Runtime::locate(
                cli.runtime.as_deref(),
                store.root().join("runtime"),
            )?;
            crate::daemon::info::info(crate::daemon::info::Facts {
                store_root: store.root(),
                runtime: &runtime.binary,
                max_context_size: crate::daemon::DEFAULT_MAX_CONTEXT_SIZE,
                images: store.image_summaries()?.len() as u64,
            })
        }
    };
    match &cli.addr {
        Some(a) => println!("Server: berth-buildd at {a}"),
        None => println!("Server: in-process engine"),
    }
    println!(" Store:               {}", i.store_root);
    println!(" Images:              {}", i.images);
    println!(" Runtime:             {}", i.runtime);
    println!(" Platform:            {}", i.platform);
    println!(" Default compression: {}", i.default_compression);
    println!(" Default network:     {}", i.default_network);
    println!(" Max context size:    {}", i.max_context_size);
    println!(" Kernel:              {}", i.kernel);
    Ok(())
}
