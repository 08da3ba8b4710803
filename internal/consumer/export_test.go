package consumer

// LaneOf reports the lane w routes a command subject to. Tests use it to pick
// cart ids that land on distinct lanes, so that parallelism they assert on is
// guaranteed by construction rather than by the luck of the hash.
func LaneOf(w *Worker, subject string) int { return w.lane(subject) }
