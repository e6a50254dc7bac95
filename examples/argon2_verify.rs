//! Prints how long one password verification takes here, in milliseconds
//! (the median of 15): the unit of login throughput in `benches/load.sh`.

use std::time::Instant;

use tollgate::auth::password::Passwords;
use tollgate::domain::Password;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let passwords = Passwords::new(1)?;
    let password =
        Password::parse("correct horse battery".to_string()).map_err(anyhow::Error::msg)?;
    let hash = passwords.hash(&password).await?;
    let mut times = Vec::new();
    for _ in 0..15 {
        let started = Instant::now();
        passwords.verify(&password, Some(&hash)).await?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    println!("{:.1}", times[times.len() / 2]);
    Ok(())
}
