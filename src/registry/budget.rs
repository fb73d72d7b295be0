//! A request budget per registry, shared by every object of a process: at most so many
//! requests in flight and so many started per second, and a pause for everyone when the
//! registry answers 429. Registries rate-limit by client, not by object.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

#[derive(Clone, Debug)]
pub struct BudgetOptions {
    /// Requests in flight at once per registry.
    pub max_in_flight: usize,
    /// Requests started per second per registry; 0: no limit.
    pub per_second: f64,
}

impl Default for BudgetOptions {
    fn default() -> Self {
        Self {
            max_in_flight: 32,
            per_second: 0.0,
        }
    }
}

struct RegistryBudget {
    in_flight: Arc<Semaphore>,
    /// The earliest time the next request may start.
    next_start: Mutex<Instant>,
}

#[derive(Default)]
pub struct Budgets {
    options: BudgetOptions,
    registries: Mutex<HashMap<String, Arc<RegistryBudget>>>,
}

/// Held while a request is in flight.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl Budgets {
    pub fn new(options: BudgetOptions) -> Self {
        Self {
            options,
            registries: Mutex::default(),
        }
    }

    fn of(&self, registry: &str) -> Arc<RegistryBudget> {
        let mut registries = self.registries.lock().expect("not poisoned");
        Arc::clone(registries.entry(registry.to_string()).or_insert_with(|| {
            Arc::new(RegistryBudget {
                in_flight: Arc::new(Semaphore::new(self.options.max_in_flight.max(1))),
                next_start: Mutex::new(Instant::now()),
            })
        }))
    }

    /// Waits for a slot: a free place in flight, and the next start time of the rate.
    pub async fn acquire(&self, registry: &str) -> Slot {
        let budget = self.of(registry);
        let permit = Arc::clone(&budget.in_flight)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let start = {
            let mut next = budget.next_start.lock().expect("not poisoned");
            let now = Instant::now();
            let start = (*next).max(now);
            let spacing = if self.options.per_second > 0.0 {
                Duration::from_secs_f64(1.0 / self.options.per_second)
            } else {
                Duration::ZERO
            };
            *next = start + spacing;
            start
        };
        tokio::time::sleep_until(start).await;
        Slot { _permit: permit }
    }

    /// The registry asked everyone to wait (429 with Retry-After): no request to it starts
    /// before `wait` has passed.
    pub fn pause(&self, registry: &str, wait: Duration) {
        let budget = self.of(registry);
        let mut next = budget.next_start.lock().expect("not poisoned");
        *next = (*next).max(Instant::now() + wait);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_rate_spaces_requests_and_a_pause_holds_everyone() {
        let budgets = Budgets::new(BudgetOptions {
            max_in_flight: 8,
            per_second: 10.0,
        });
        let start = Instant::now();
        for _ in 0..5 {
            drop(budgets.acquire("r:1").await);
        }
        assert!(
            start.elapsed() >= Duration::from_millis(400),
            "{:?}",
            start.elapsed()
        );
        budgets.pause("r:1", Duration::from_secs(3));
        let before = Instant::now();
        drop(budgets.acquire("r:1").await);
        assert!(before.elapsed() >= Duration::from_secs(3));
        let other = Instant::now();
        drop(budgets.acquire("other:1").await);
        assert!(
            other.elapsed() < Duration::from_millis(1),
            "registries have separate budgets"
        );
    }

    #[tokio::test]
    async fn in_flight_requests_are_bounded() {
        let budgets = Arc::new(Budgets::new(BudgetOptions {
            max_in_flight: 2,
            per_second: 0.0,
        }));
        let a = budgets.acquire("r:1").await;
        let _b = budgets.acquire("r:1").await;
        let waiting = {
            let budgets = Arc::clone(&budgets);
            tokio::spawn(async move { budgets.acquire("r:1").await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        drop(a);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .unwrap()
            .unwrap();
    }
}
