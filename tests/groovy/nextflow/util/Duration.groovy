package nextflow.util

/*
 * A stand-in for Nextflow's nextflow.util.Duration (nf-commons), for tests/nextflow_config.groovy:
 * what the pipeline's config needs (`8.GB * task.attempt`, `4.h`, comparisons, toString).
 */

class Duration implements Comparable<Duration> {
    final long millis
    Duration(long millis) { this.millis = millis }
    Duration multiply(Number n) { new Duration((long) (millis * n)) }
    Duration div(Number n) { new Duration((long) (millis / n)) }
    Duration plus(Duration o) { new Duration(millis + o.millis) }
    int compareTo(Duration o) { millis <=> o.millis }
    boolean equals(Object o) { o instanceof Duration && o.millis == millis }
    int hashCode() { Long.hashCode(millis) }
    String toString() {
        def parts = []
        long rest = millis
        [['d', 86400000L], ['h', 3600000L], ['m', 60000L], ['s', 1000L], ['ms', 1L]].each { unit, size ->
            if( rest >= size ) { parts << "${rest.intdiv(size)}${unit}"; rest = rest % size }
        }
        return parts ? parts.join(' ') : '0ms'
    }
}
