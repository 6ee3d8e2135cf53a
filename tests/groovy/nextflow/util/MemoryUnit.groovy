package nextflow.util

/*
 * A stand-in for Nextflow's nextflow.util.MemoryUnit (nf-commons), for tests/nextflow_config.groovy:
 * what the pipeline's config needs (`8.GB * task.attempt`, `4.h`, comparisons, toString).
 */

import java.text.DecimalFormat

class MemoryUnit implements Comparable<MemoryUnit> {
    static final List<String> UNITS = ['B', 'KB', 'MB', 'GB', 'TB', 'PB']
    final long bytes
    MemoryUnit(long bytes) { this.bytes = bytes }
    MemoryUnit multiply(Number n) { new MemoryUnit((long) (bytes * n)) }
    MemoryUnit div(Number n) { new MemoryUnit((long) (bytes / n)) }
    MemoryUnit plus(MemoryUnit o) { new MemoryUnit(bytes + o.bytes) }
    int compareTo(MemoryUnit o) { bytes <=> o.bytes }
    boolean equals(Object o) { o instanceof MemoryUnit && o.bytes == bytes }
    int hashCode() { Long.hashCode(bytes) }
    String toString() {   // nextflow.util.MemoryUnit#toString
        if( bytes <= 0 ) return '0'
        int group = (int) (Math.log10(bytes) / Math.log10(1024))
        return new DecimalFormat('0.#').format(bytes / Math.pow(1024, group)) + ' ' + UNITS[group]
    }
}
