package cartcache

// containsID reports whether ids lists id.
func containsID(ids []string, id string) bool {
	// Newest last: a redelivery is most likely a recent command.
	for i := len(ids) - 1; i >= 0; i-- {
		if ids[i] == id {
			return true
		}
	}
	return false
}

// appendID returns ids with id appended, keeping the newest keep. It never
// changes ids' backing array, which may be a stored cart's.
func appendID(ids []string, id string, keep int) []string {
	if len(ids)+1 > keep {
		ids = ids[len(ids)+1-keep:]
	}
	out := make([]string, len(ids), len(ids)+1)
	copy(out, ids)
	return append(out, id)
}

// mergeIDs returns a followed by the ids of b it lacks.
func mergeIDs(a, b []string) []string {
	if len(b) == 0 {
		return a
	}
	out := append([]string(nil), a...)
	for _, id := range b {
		if !containsID(out, id) {
			out = append(out, id)
		}
	}
	return out
}
