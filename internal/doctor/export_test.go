package doctor

// ParseFirecrackerVersion exposes the version parser to the tests.
var ParseFirecrackerVersion = parseFirecrackerVersion
