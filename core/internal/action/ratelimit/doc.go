// Package ratelimit keeps calls to the Lark OpenAPI within Lark's frequency
// limits (docs/lark-facts.md#rate-limits), shared by every replica: a
// Scheduler queues each app's calls in priority order and lets each go when
// every limit it is under — the app's API per second and per minute, and
// its chat, user or card — admits it, by GCRA. With a Redis client the
// limits and the "blocked until" marks set after Lark refuses a call live
// in Redis, for every replica; without one they live in the process and
// behave the same.
package ratelimit
