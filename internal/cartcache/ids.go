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

// keepNewest returns the newest keep of ids.
func keepNewest(ids []string, keep int) []string {
	if len(ids) > keep {
		return ids[len(ids)-keep:]
	}
	return ids
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
