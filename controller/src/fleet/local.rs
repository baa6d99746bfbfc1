//! Local fleet: N real nginx + agent pairs on loopback. STUB until the agent lands.
