process PREPROCESS {
    tag "${meta.id}"
    label 'process_medium'

    input:
    tuple val(meta), path(data, stageAs: 'data/*'), path(image, stageAs: 'image/*'), path(positions, stageAs: 'positions/*'), path(labels, stageAs: 'labels/*')

    output:
    tuple val(meta), path("${prefix}.spots.parquet"), emit: spots
    tuple val(meta), path("${prefix}.expr.parquet"), emit: expr
    tuple val(meta), path("${prefix}.graph.parquet"), emit: graph
    tuple val(meta), path("${prefix}.h5ad"), emit: h5ad
    tuple val(meta), path("${prefix}.image.png"), emit: image, optional: true
    path "versions.yml", emit: versions

    script:
    def args = task.ext.args ?: ''
    prefix = task.ext.prefix ?: "${meta.id}"
    def image_arg = image ? "--image ${image}" : ''
    def positions_arg = positions ? "--positions ${positions}" : ''
    def labels_arg = labels ? "--labels ${labels}" : ''
    def n_clusters_arg = meta.n_clusters ? "--n-clusters ${meta.n_clusters}" : ''
    """
    senca preprocess \\
        --sample ${prefix} \\
        --data ${data} \\
        ${image_arg} \\
        ${positions_arg} \\
        ${labels_arg} \\
        ${n_clusters_arg} \\
        ${args} \\
        --outdir .

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        senca: \$(senca --version | sed 's/senca, version //')
    END_VERSIONS
    """

    stub:
    prefix = task.ext.prefix ?: "${meta.id}"
    """
    touch ${prefix}.spots.parquet ${prefix}.expr.parquet ${prefix}.graph.parquet ${prefix}.h5ad

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        senca: \$(senca --version | sed 's/senca, version //')
    END_VERSIONS
    """
}
